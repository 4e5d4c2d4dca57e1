"""Image-only variants of processors whose stock versions insist on a video processor.

transformers' video processors need torchvision, which has no CPU build here, so the stock
Qwen2-VL and LLaVA-OneVision processors cannot even be constructed. Loupe sends images only;
these subclasses drop the video processor and otherwise behave as the originals. They keep the
original class names so saved checkpoints stay loadable with ``AutoProcessor`` elsewhere.
Explicit parameters (not ``**kwargs``) matter: transformers reads the ``__init__`` signature to
decide which saved settings to pass back in.
"""

from __future__ import annotations

from transformers import models


class Qwen2VLProcessor(models.qwen2_vl.Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: ANN001
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class LlavaOnevisionProcessor(models.llava_onevision.LlavaOnevisionProcessor):
    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,  # noqa: ANN001
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy,
                         chat_template=chat_template, image_token=image_token, video_token=video_token,
                         vision_aspect_ratio=vision_aspect_ratio, **kwargs)
