"""open_clip text towers: any ``open_clip.create_model`` architecture, tag or checkpoint file.

The BPE vocabulary of open_clip's tokenizer ships inside the ``open_clip_torch`` package, so
only the model weights have to be found. They are never downloaded here: a pretrained tag must
already be in the local cache (Hugging Face cache or ``~/.cache/clip``), otherwise a
``WeightsNotFoundError`` gives the command that fetches it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from zeusseg.errors import WeightsNotFoundError
from zeusseg.pretrained import hf_cached
from zeusseg.text.base import TextEmbedding, TextEncoder

_logger = logging.getLogger(__name__)


def open_clip_checkpoint(model_name: str, pretrained: str) -> str:
    """Local file of open_clip weights ``pretrained`` (a tag of ``model_name`` or a file path).

    Raises:
        ValueError: unknown tag (the message lists the tags of ``model_name``).
        WeightsNotFoundError: the file is not on this machine.
    """
    import open_clip

    path = Path(pretrained).expanduser()
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists():
        if not path.is_file():
            raise WeightsNotFoundError(
                f"open_clip:{model_name}", [str(path)], "pass an existing checkpoint file"
            )
        return str(path)
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"unknown open_clip tag '{pretrained}' for {model_name}; "
            f"known: {', '.join(tags) or 'none'}"
        )
    looked: list[str] = []
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" -> ("org/repo", "")
        names = [filename] if filename else [
            "open_clip_model.safetensors", "open_clip_pytorch_model.bin"
        ]
        for name in names:
            found = hf_cached(repo, name)
            if found is not None:
                return str(found)
        looked.append(f"Hugging Face cache: {repo}/{'|'.join(names)}")
    if cfg.get("url"):
        target = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if target.is_file():
            return str(target)
        looked.append(str(target))
    if cfg.get("hf_hub"):
        how = f"hf download {os.path.split(cfg['hf_hub'])[0]}"
    else:
        how = f"wget -P ~/.cache/clip {cfg.get('url', '')}"
    raise WeightsNotFoundError(f"open_clip:{model_name}:{pretrained}", looked, how)


class OpenCLIPTextEncoder(TextEncoder):
    """The text tower of an open_clip model.

    ``tokens`` are the ``ln_final`` outputs (B, L, C = text width; CLIP's text transformer is
    causal, so token i sees tokens 0..i); ``pooled`` is ``encode_text`` (D = embed_dim, not
    normalised). Context length L = the model's (77 for CLIP) before trimming.

    Args:
        model: an open_clip CLIP/CustomTextCLIP model.
        tokenizer: ``open_clip.get_tokenizer(model_name)``.
        encoder_id: the encoder's ``id``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, encoder_id: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.id = encoder_id
        tower = getattr(model, "text", model)
        if not hasattr(tower, "ln_final"):
            raise ValueError(f"{encoder_id}: text tower without ln_final is not supported")
        self._ln_final = tower.ln_final
        self.dim = int(tower.ln_final.weight.shape[0])
        inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers one
        self._pad_id = int(getattr(inner, "pad_token_id", None) or 0)
        with torch.no_grad():
            self.pooled_dim = int(model.encode_text(tokenizer(["a"]).to(self.device)).shape[-1])

    @classmethod
    def create(
        cls,
        model_name: str,
        pretrained: str | None = None,
        *,
        random_init: bool = False,
    ) -> OpenCLIPTextEncoder:
        """Build an open_clip model and keep its text side.

        Args:
            model_name: an ``open_clip.list_models()`` name (or one added with
                ``open_clip.add_model_config``).
            pretrained: a pretrained tag (see ``open_clip.list_pretrained()``) or a checkpoint
                file. Required unless ``random_init``.
            random_init: random weights (tests; explicit only).

        Raises:
            ValueError: neither ``pretrained`` nor ``random_init`` given, or an unknown name/tag.
            WeightsNotFoundError: the weights are not on this machine.
        """
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model '{model_name}'; see open_clip.list_models()")
        if pretrained is None and not random_init:
            raise ValueError(
                f"open_clip:{model_name}: give a pretrained tag or checkpoint, or random_init=True"
            )
        checkpoint = None if random_init else open_clip_checkpoint(model_name, pretrained)
        model = open_clip.create_model(model_name, pretrained=checkpoint, device="cpu")
        tokenizer = open_clip.get_tokenizer(model_name)
        tag = "random" if random_init else pretrained
        encoder_id = f"open_clip:{model_name}:{tag}"
        return cls(model, tokenizer, encoder_id=encoder_id)

    def _encode(self, texts: list[str]) -> TextEmbedding:
        ids = self.tokenizer(texts).to(self.device)  # (B, L) LongTensor
        captured: list[torch.Tensor] = []
        handle = self._ln_final.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            pooled = self.model.encode_text(ids)  # (B, D)
        finally:
            handle.remove()
        tokens = captured[-1]  # (B, L, C)
        if tokens.shape[:2] != ids.shape:  # some towers run batch-second
            tokens = tokens.transpose(0, 1)
        return TextEmbedding(tokens, ids != self._pad_id, pooled)
