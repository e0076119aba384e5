"""``kitctl export-model --push REPO``: upload an export folder to a HuggingFace Hub (or a mirror of one).

Uses huggingface_hub's ``HfApi``: create the model repo if needed (``exist_ok``), then one commit with every file
of the folder. The endpoint is ``HF_ENDPOINT`` when set, else kit.yaml's ``mirrors.hf_endpoint``, else
huggingface.co; the token is huggingface_hub's usual one (``HF_TOKEN``, or ``hf auth login``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from kitctl.core import validate
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.records import error_text
from kitctl.core.optional import import_optional

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint_for(configured: Optional[str]) -> str:
    """HF_ENDPOINT, else mirrors.hf_endpoint, else huggingface.co; checked as a URL (exit 2 naming where it came
    from)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        validate.url(env, "HF_ENDPOINT (environment)")
    return (env or configured or DEFAULT_ENDPOINT).rstrip("/")


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed repo name before any export work (exit 2)."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--push {repo_id!r}: a Hub repo is <user or org>/<name>", "e.g. --push alice/gpt2-124M-llmc")


def push_folder(folder: Path, repo_id: str, *, endpoint: str, private: bool = False,
                message: Optional[str] = None) -> str:
    """Upload ``folder`` to model repo ``repo_id``; returns the commit URL. huggingface_hub is imported here: it
    costs ~0.3 s, which only ``--push`` should pay."""
    hub = import_optional("huggingface_hub", purpose="export-model --push", install="pip install huggingface_hub")
    errors = import_optional("huggingface_hub.errors", purpose="export-model --push",
                             install="pip install huggingface_hub")
    HfApi, HfHubHTTPError, LocalTokenNotFoundError = (hub.HfApi, errors.HfHubHTTPError,
                                                      errors.LocalTokenNotFoundError)

    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message or f"llmc-kit export of {folder.name}")
    except LocalTokenNotFoundError:
        raise ConfigError(f"no HuggingFace token for {endpoint}", "set HF_TOKEN, or log in with `hf auth login`") from None
    except HfHubHTTPError as e:
        status = int(getattr(getattr(e, "response", None), "status_code", 0) or 0)
        hint = {401: "the token was refused: set HF_TOKEN to a token with write access (or `hf auth login`)",
                403: f"that token may not write to {repo_id}: check the repo's owner and the token's scope",
                }.get(status, "check the repo name, your token and HF_ENDPOINT")
        raise KitError(f"upload of {folder} to {endpoint}/{repo_id} failed: {error_text(e)}",
                       hint) from None
    except (OSError, ValueError) as e:
        raise KitError(f"cannot reach {endpoint} to upload {repo_id}: {error_text(e)}",
                       "check the network, or set HF_ENDPOINT (or mirrors.hf_endpoint in kit.yaml) to a mirror"
                       ) from None
    except Exception as e:    # httpx2's transport errors (connection refused, TLS, timeouts) are no OSError
        if type(e).__module__.split(".")[0] not in ("httpx2", "httpx", "httpcore2", "httpcore"):
            raise
        raise KitError(f"cannot reach {endpoint} to upload {repo_id}: {error_text(e)}",
                       "check the network, or set HF_ENDPOINT (or mirrors.hf_endpoint in kit.yaml) to a mirror"
                       ) from None
    return str(getattr(info, "commit_url", info))
