"""export.py: a run (or its ``checkpoint-N``, or its ``sft``) as a standalone model folder with a model card,
as one GGUF file, and on the hub.

    python export.py ckpts/RUN --merged exports/my-model
    python export.py ckpts/RUN/checkpoint-40 --gguf exports/my-model.gguf --gguf_type q8_0
    python export.py ckpts/RUN --merged exports/my-model --push_to_hub me/my-model

Nothing on disk is replaced without ``--overwrite``, and a replaced export is swapped in only once the new
one is complete. Bad input is one ``error:`` line (exit 2) before any model loads; where the hub cannot be
reached, the local exports asked for are written first and the upload is then one ``error:`` line.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from trl_grpo.data.prompts import system_prompt
from trl_grpo.export import card, gguf_file, merged
from trl_grpo.runs.cli import UsageError, user_errors
from trl_grpo.settings import flags

# Written into every --merged folder: --overwrite replaces only a folder that carries it (an earlier export),
# never a folder of the user's that happens to be named.
MARKER = ".trl_grpo_export"


def _check_target(path: str | None, what: str, overwrite: bool, is_file: bool, run: str) -> str | None:
    if not path:
        return None
    path = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
    run = os.path.realpath(run)
    for guarded in (run, os.path.realpath(os.getcwd()), os.path.realpath(os.path.expanduser("~")), os.sep):
        if path == guarded or guarded.startswith(path.rstrip(os.sep) + os.sep):
            raise UsageError(f"{what} {path!r} is or holds {guarded!r}; give a new path for the export.")
    if path.startswith(run + os.sep):
        raise UsageError(f"{what} {path!r} lies inside the run folder; export beside it, not into it.")
    if os.path.exists(path):
        if os.path.isdir(path) == is_file:
            kind = "folder" if is_file else "file"
            raise UsageError(f"{what} {path!r} is a {kind}; give a {'file' if is_file else 'folder'} path.")
        if not overwrite and (is_file or os.listdir(path)):
            raise UsageError(f"{what} {path!r} exists; choose another path, or --overwrite to replace it.")
        if overwrite and not is_file and os.listdir(path) and not os.path.isfile(os.path.join(path, MARKER)):
            raise UsageError(
                f"{what} {path!r} holds files that are not an earlier export of this tool; --overwrite replaces "
                "only those. Choose another path."
            )
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{what} {path!r}: its folder cannot be made ({exc.strerror}).") from None
    return path


def _prompt_text(args_recorded: dict) -> str:
    return args_recorded.get("system_prompt") or system_prompt(args_recorded.get("prompt_template") or "worked_example")


def _swap_in(tmp: str, final: str) -> None:
    """Put the finished ``tmp`` where ``final`` is, replacing an old export only now."""
    if os.path.isdir(final):
        old = f"{final}.old-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def main(argv: list[str] | None = None) -> int:
    args = flags.build_parser("export").parse_args(argv)
    if not (args.merged or args.gguf or args.push_to_hub):
        raise UsageError("nothing to export: give --merged DIR, --gguf FILE and/or --push_to_hub OWNER/NAME.")
    if args.push_to_hub and "/" not in args.push_to_hub.strip("/"):
        raise UsageError(f"--push_to_hub {args.push_to_hub!r}: expected OWNER/NAME, e.g. me/smollm2-grpo-math.")
    with user_errors():
        src = merged.source(args.run)
        merged_dir = _check_target(args.merged, "--merged", args.overwrite, is_file=False, run=src["run"])
        gguf_path = _check_target(args.gguf, "--gguf", args.overwrite, is_file=True, run=src["run"])
        if merged_dir and gguf_path and gguf_path.startswith(merged_dir + os.sep):
            raise UsageError(f"--gguf {gguf_path!r} lies inside --merged {merged_dir!r}; write it beside.")
        if gguf_path:
            gguf_file.check_config(merged.base_config(src))  # an architecture it does not cover: before loading
        name = args.name or os.path.basename(src["run"].rstrip(os.sep))
        model, tokenizer = merged.merged_model(src)
        prompt = _prompt_text(src["record"].get("args", {}))
        written = []
        upload = merged_dir
        if merged_dir or args.push_to_hub:
            parent = os.path.dirname(merged_dir) if merged_dir else None
            tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
            try:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                card.write_card(tmp, src, name, args.results_dir, prompt, merged=True)
                with open(os.path.join(tmp, MARKER), "w") as f:
                    f.write(f"exported from {src['folder']}\n")
                os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep others out of a shared model
                if merged_dir:
                    _swap_in(tmp, merged_dir)
                    written.append(f"merged model and model card: {merged_dir}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            upload = merged_dir or tmp
        if gguf_path:
            fd, tmp_file = tempfile.mkstemp(prefix=".export-", suffix=".gguf", dir=os.path.dirname(gguf_path))
            os.close(fd)
            try:
                info = gguf_file.write_gguf(model, tokenizer, tmp_file, args.gguf_type, name)
                os.chmod(tmp_file, 0o644)
                os.replace(tmp_file, gguf_path)
            finally:
                if os.path.exists(tmp_file):
                    os.remove(tmp_file)
            size = os.path.getsize(gguf_path) / 2**20
            written.append(f"GGUF ({info['type']}, {info['architecture']}, {size:.1f} MiB): {gguf_path}")
    for line in written:
        print(f"Wrote {line}", flush=True)
    if args.push_to_hub:
        try:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(args.push_to_hub, exist_ok=True)
            api.upload_folder(repo_id=args.push_to_hub, folder_path=upload)
        except Exception as exc:  # noqa: BLE001 - offline, no token, no rights: each means "not uploaded"
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            kept = "; the local exports above are complete" if written else ""
            raise UsageError(
                f"--push_to_hub {args.push_to_hub}: the upload failed ({reason}){kept}. Upload later with "
                f"`hf upload {args.push_to_hub} {merged_dir or 'DIR'}` where the hub is reachable and you are logged "
                "in."
            ) from None
        finally:
            if upload and upload != merged_dir:
                shutil.rmtree(upload, ignore_errors=True)
        print(f"Uploaded to https://huggingface.co/{args.push_to_hub}", flush=True)
    return 0
