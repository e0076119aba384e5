"""Dataset recipes: ``datasets/*.yaml``, one typed model (unknown keys are errors) read with the kit's limited
YAML reader. A recipe says where documents come from and how llm.c names the shards; ``kitctl data NAME``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.core.pins import pins
from kitctl.core.records import UserData, load_yaml

RECIPES_DIR = Path(os.environ.get("KIT_RECIPES_DIR", resources.share("datasets")))

Kind = Literal["hf_parquet", "text", "hellaswag", "pretokenized"]


class Recipe(UserData):
    """One ``datasets/<name>.yaml``."""

    name: str = Field("", description="the file's stem (set by load_recipe, not written in the file)")
    kind: Kind
    prefix: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="output file prefix (llm.c's `name`)")
    description: str = ""
    repo: Optional[str] = None                  # HF dataset repository
    pin: Optional[str] = None                   # key under `datasets:` in docker/versions.yaml
    config: Optional[str] = None                # HF config name, e.g. sample-10BT
    data_files: Optional[str] = None            # glob of the config's parquet files inside the repo
    url: Optional[str] = None                   # text / hellaswag: where to download the file
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")   # of the downloaded file
    # the file's git blob id in its upstream repository (`git ls-tree`): a content pin where no sha256 is published
    git_blob: Optional[str] = Field(None, pattern=r"^[0-9a-f]{40}$")
    examples: Optional[int] = Field(None, ge=1)  # hellaswag: the examples the pinned file holds
    split_on: Optional[str] = None              # txt: split into documents on this separator (llm.c quirk kept)
    first_shard_tokens: Optional[int] = Field(None, ge=1)
    shard_size: Optional[int] = Field(None, ge=1)
    approx_tokens: Optional[int] = Field(None, ge=0)
    approx_download_bytes: Optional[int] = Field(None, ge=0)
    train_shards: Optional[int] = Field(None, ge=0)   # pretokenized: how many train shards the repo has

    def revision(self) -> Optional[str]:
        if not self.pin:
            return None
        return str(pins()["datasets"][self.pin]["revision"])


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown dataset '{name}': no recipe {path.name} and no such file or folder",
                          f"recipes: {', '.join(recipe_names())}; or give a parquet/jsonl/txt file, a folder "
                          "or a glob")
    r = load_yaml(Recipe, path, "dataset recipe")
    return r.model_copy(update={"name": name})
