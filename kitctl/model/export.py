"""``kitctl export-model``: write an HF export folder atomically, and find (or make) the export a run's checkpoint has.

The folder is built as ``.tmp-<name>.<pid>`` beside the final one and renamed into place when every file is
written and fsynced: an interrupted export (Ctrl-C, full disk, kill) never leaves a partial folder under the
final name, and the next export removes temp folders whose process is gone. ``llmc_export.json`` in the export
records where it came from (checkpoint path, size, mtime, sha256, step), so ``kitctl sample`` / ``eval`` reuse an
export only while it matches its checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from kitctl import __version__
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.run_folder import MARKERS as RUN_MARKERS
from kitctl.core.run_folder import Checkpoints
from kitctl.core.files import free_bytes, normal_mode, replace_atomic, sha256_file, temp_path, write_atomic
from kitctl.core.records import Record
from kitctl.model import hf
from kitctl.model.checkpoint import Checkpoint, check_finite, check_fits_tokenizer, open_checkpoint
from kitctl.core import proc
from kitctl.model.locate import Target

RECORD = "llmc_export.json"


class ExportRecord(Record):
    """``llmc_export.json``: the provenance of an export folder."""

    KIND = "llm.c export record"
    source: str
    source_size: int
    source_mtime_ns: int
    source_sha256: str
    step: Optional[int] = None
    checkpoint_dtype: str
    dtype: str
    config: dict
    kit_version: str = __version__
    created: str = ""


@dataclass(frozen=True)
class Exported:
    out: Path
    record: ExportRecord
    bytes: int
    reused: bool = False


def default_out(checkpoint: Path) -> Path:
    """``<checkpoint folder>/hf/<model_NNNNNNNN>``: beside the checkpoint, on the same (big) disk."""
    return checkpoint.parent / "hf" / checkpoint.stem




def _remove_stale(out: Path) -> None:
    """Temp folders of earlier exports to ``out`` whose process is gone (killed with -9, a power cut)."""
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        for prefix in (f".tmp-{out.name}.", f".old-{out.name}."):
            if p.name.startswith(prefix) and p.name[len(prefix):].isdigit() \
                    and not proc.pid_alive(int(p.name[len(prefix):])):
                shutil.rmtree(p, ignore_errors=True)


# every name an export folder holds: --force replaces a folder holding these and nothing else
EXPORT_NAMES = frozenset({"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
                          "special_tokens_map.json", *hf.TOKENIZER_COPIES, "README.md", RECORD})
NEW_OUT = "choose a new or empty --out (the default is <run>/hf/model_NNNNNNNN)"


def _inside(p: Path, folder: Path) -> bool:
    try:
        p.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_out(out: Path, force: bool, protect: Sequence[Path] = (), source: Optional[Path] = None) -> None:
    """May the export be written to ``out``? A new or empty folder: yes. A folder that export-model wrote (its
    llmc_export.json, and nothing but export files): only with ``force``. Anything else -- a run folder, the runs
    root, the data root, a folder holding checkpoints, the checkpoint's own folder, any folder with other files --
    is never replaced, and the refusal does not offer --force."""
    if out.is_symlink():
        raise ConfigError(f"--out {out} is a symbolic link", f"pass the real folder, or {NEW_OUT}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "pass a folder path for the export")
    if not out.is_dir():
        return
    for root in protect:            # the data root, the runs root: named as such
        if _inside(root, out):
            raise ConfigError(f"--out {out} is (or holds) {root}: export-model never replaces it", NEW_OUT)
    if source is not None and _inside(source, out):
        raise ConfigError(f"--out {out} holds the checkpoint being exported ({source}): export-model never "
                          "replaces it", NEW_OUT)
    try:
        names = sorted(os.listdir(out))
    except OSError as e:
        raise ConfigError(f"cannot read --out {out}: {e.strerror or e}", NEW_OUT) from None
    if not names:
        return
    strangers = [n for n in names if n not in EXPORT_NAMES]
    if strangers or RECORD not in names:
        what = ("a run folder" if set(RUN_MARKERS) & set(names)
                else "a folder holding checkpoints" if Checkpoints.of_names(names).any
                else "a folder export-model did not write" if RECORD not in names
                else "an export with other files added")
        shown = ", ".join(strangers[:5]) + (f" (+{len(strangers) - 5} more)" if len(strangers) > 5 else "")
        raise ConfigError(f"--out {out} is {what} ({shown or 'no ' + RECORD}): export-model replaces only a "
                          "folder it wrote itself, and never one holding anything else",
                          f"{NEW_OUT}; or move those files away yourself")
    try:
        ExportRecord.read(out / RECORD)
    except KitError as e:
        raise ConfigError(f"--out {out}: its {RECORD} is not one export-model wrote ({e.message})",
                          f"{NEW_OUT}; or move that folder away yourself") from None
    if not force:
        raise ConfigError(f"--out {out} already holds an export (its {RECORD})",
                          "pass --force to replace it (the new export is written beside it and swapped in whole), "
                          "or choose another --out")


@contextlib.contextmanager
def staged_folder(out: Path, force: bool, protect: Sequence[Path] = (), source: Optional[Path] = None
                  ) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; on a clean exit it replaces ``out`` in one rename."""
    out = out.absolute()
    check_out(out, force, protect, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".tmp-{out.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old = out.parent / f".old-{out.name}.{os.getpid()}"
    try:
        yield tmp
        _fsync_dir(tmp)
        if out.exists():
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)      # put the previous export back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_record(ck: Checkpoint, dtype: str) -> ExportRecord:
    st = ck.path.stat()
    return ExportRecord(source=str(ck.path), source_size=st.st_size, source_mtime_ns=st.st_mtime_ns,
                        source_sha256=sha256_file(ck.path), step=ck.step, checkpoint_dtype=ck.dtype, dtype=dtype,
                        config=ck.config.dims, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def write_export(ck: Checkpoint, out: Path, *, dtype: Optional[str] = None, force: bool = False,
                 say: Callable[[str], None] = lambda s: None, protect: Sequence[Path] = ()) -> Exported:
    """Export ``ck`` to ``out`` (model.safetensors, config.json, generation_config.json, tokenizer files,
    README.md, llmc_export.json). The checkpoint is checked first (vocab and context against the GPT-2
    tokenizer written beside it, every weight finite); ``protect`` (the data root, the runs root) is never
    replaced, nor any folder but an earlier export (see :func:`check_out`)."""
    dtype = dtype or ck.dtype
    if dtype not in hf.DTYPES:
        raise ConfigError(f"--dtype {dtype}: not one of {', '.join(hf.DTYPES)}", "use float32 or bfloat16")
    out = out.absolute()
    check_out(out, force, protect, ck.path)
    check_fits_tokenizer(ck)
    say(f"checking {ck.path.name}: every weight finite")
    check_finite(ck)
    need = hf.export_bytes(ck.config, dtype)
    free = free_bytes(out.parent)
    if free < need + (64 << 20):
        raise KitError(f"not enough space for the export in {out.parent}: {need / 1e9:.2f} GB needed, "
                       f"{free / 1e9:.2f} GB free", "free space there or pass --out on a bigger disk")
    tok = hf.tokenizer_sources()
    rec = make_record(ck, dtype)
    say(f"writing {need / 1e6:,.0f} MB of {dtype} weights ({ck.config.num_parameters:,} llm.c parameters, "
        f"padded vocab rows dropped)")
    with staged_folder(out, force, protect, ck.path) as tmp:
        st = tmp / "model.safetensors"
        part = temp_path(st)
        hf.write_safetensors(ck, part, dtype)
        normal_mode(part)               # the safetensors writer makes 0600; the export is readable like the rest
        replace_atomic(part, st)
        write_atomic(tmp / "config.json", hf.dumps(hf.config_json(ck.config, dtype)))
        write_atomic(tmp / "generation_config.json", hf.dumps(hf.generation_config_json()))
        for name, text in hf.tokenizer_jsons(ck.config).items():
            write_atomic(tmp / name, hf.dumps(text))
        for name, src in tok.items():
            write_atomic(tmp / name, src.read_bytes())
        note = f" (step {ck.step})" if ck.step is not None else ""
        write_atomic(tmp / "README.md", hf.model_card(ck, dtype, note))
        rec.write(tmp / RECORD)
    size = sum(p.stat().st_size for p in out.iterdir())
    return Exported(out, rec, size)


def export_matches(export_dir: Path, checkpoint: Path) -> Optional[ExportRecord]:
    """The export's record if it was made from ``checkpoint`` as it is now (same path, size and mtime)."""
    p = export_dir / RECORD
    if not p.is_file():
        return None
    try:
        rec = ExportRecord.read(p)
        st = checkpoint.stat()
    except (KitError, OSError):
        return None
    same = (Path(rec.source) == checkpoint.absolute() and rec.source_size == st.st_size
            and rec.source_mtime_ns == st.st_mtime_ns)
    return rec if same else None


def ensure_export(target: Target, say: Callable[[str], None] = lambda s: None) -> Path:
    """The export folder for ``target``: the folder itself, the default export of its checkpoint when it is up to
    date, or a fresh default export (replacing a stale one)."""
    if target.export_dir is not None:
        return target.export_dir
    assert target.checkpoint is not None
    out = default_out(target.checkpoint)
    if export_matches(out, target.checkpoint):
        return out
    ck = open_checkpoint(target.checkpoint)
    say(f"exporting {target.checkpoint} -> {out}")
    return write_export(ck, out, force=True, say=say).out
