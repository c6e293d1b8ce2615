"""Publish app.py as a Hugging Face Space: stage a folder (app.py, the selfalign package, this folder's README.md
with the Space front matter and requirements.txt) and upload it to a Gradio Space.

    python space/deploy.py org/selfalign-browser            # create or update the Space
    python space/deploy.py --stage_only /tmp/space          # only write the folder (to look at, or push by git)

The project README is the project's, so the Space's card lives here and replaces it in the Space.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfalign.errors import fail, run_main  # noqa: E402


def stage(folder: Path) -> Path:
    """The Space's files in `folder` (emptied first)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "app.py", folder / "app.py")
    shutil.copy(ROOT / "space" / "README.md", folder / "README.md")
    shutil.copy(ROOT / "space" / "requirements.txt", folder / "requirements.txt")
    shutil.copytree(ROOT / "selfalign", folder / "selfalign", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("space_id", nargs="?", help="The Space to create or update: org/name.")
    parser.add_argument("--stage_only", type=Path, help="Write the Space's folder here and upload nothing.")
    parser.add_argument("--private", action="store_true", help="Create the Space as private.")
    args = parser.parse_args()
    if args.stage_only:
        print(f"staged the Space in {stage(args.stage_only)}")
        return
    if not args.space_id or "/" not in args.space_id:
        fail("give the Space id (org/name), or --stage_only DIR")
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = stage(Path(tmp) / "space")
        api = HfApi()
        try:
            api.create_repo(args.space_id, repo_type="space", space_sdk="gradio", private=args.private,
                            exist_ok=True)
            api.upload_folder(repo_id=args.space_id, repo_type="space", folder_path=folder,
                              commit_message="selfalign run browser (space/deploy.py)")
        except Exception as err:
            fail(f"upload to the Space {args.space_id} failed: {str(err).splitlines()[0] if str(err) else err!r}")
    print(f"deployed: https://huggingface.co/spaces/{args.space_id}")


if __name__ == "__main__":
    run_main(main)
