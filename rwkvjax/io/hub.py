"""Hugging Face Hub downloads (cache, revision, offline) with one clear error per failure."""

from __future__ import annotations

from pathlib import Path

from rwkvjax.errors import CheckpointError, HubError

_WANTED = ("*.safetensors", "*.json", "*.txt", "*.pth")


def download_model(repo_id: str, *, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Fetch the weight, config and vocab files of `repo_id` (listed from the repo itself) into the HF cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=_WANTED))
    except LocalEntryNotFoundError:
        raise HubError(
            f"{repo_id}: not in the local Hugging Face cache and the Hub cannot be reached (offline or "
            "HF_HUB_OFFLINE=1). Connect once to download it, or pass a local file or folder instead.") from None
    except GatedRepoError:
        raise HubError(f"{repo_id}: gated repository; accept its terms on the Hub and log in with `hf auth login`."
                       ) from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id}: no such repository on the Hugging Face Hub (or it is private).") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id}: revision {revision!r} does not exist.") from None
    except OSError as e:
        raise HubError(f"{repo_id}: download failed ({e}). Check the network, or pass a local path.") from None
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.pth")):
        raise CheckpointError(f"{repo_id}: the repository has no .safetensors or .pth weights")
    return folder
