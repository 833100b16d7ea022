"""Node specifications of the stand-in: the `/object_info` a ComfyUI v0.3.64 server reports.

Each `NodeSpec` carries a node's real input names, types, defaults, ranges and output order
(docs/comfyui-protocol.md §2 and §8). Combo lists that come from model folders are callables so they
are rebuilt from disk on every call, as ComfyUI does. Legacy nodes encode combos as
`[["a", "b"], {...}]`; schema-V3 nodes (ImageScaleToTotalPixels, ...) as
`["COMBO", {"options": [...]}]`.
Which node is which, and every input's encoding, follows what a real 0.3.64 answers
(tests/standin/data/object_info_0.3.64.json, checked by tests/standin/test_real_object_info.py).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standins.comfyui.modelfiles import MODEL_EXTENSIONS, MODEL_FOLDERS

MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF

# v0.3.64's lists (the newer exp_heun_2_x0* samplers are absent).
SAMPLERS: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2",
)  # fmt: skip
SCHEDULERS: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip
UPSCALE_METHODS: tuple[str, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS: tuple[str, ...] = ("disabled", "center")
FLORENCE2_MODELS: tuple[str, ...] = (
    "microsoft/Florence-2-base", "microsoft/Florence-2-base-ft", "microsoft/Florence-2-large",
    "microsoft/Florence-2-large-ft", "HuggingFaceM4/Florence-2-DocVQA",
    "thwri/CogFlorence-2.1-Large", "thwri/CogFlorence-2.2-Large",
    "gokaygokay/Florence-2-SD3-Captioner",
    "gokaygokay/Florence-2-Flux-Large", "MiaoshouAI/Florence-2-base-PromptGen-v1.5",
    "MiaoshouAI/Florence-2-large-PromptGen-v1.5", "MiaoshouAI/Florence-2-base-PromptGen-v2.0",
    "MiaoshouAI/Florence-2-large-PromptGen-v2.0",
)  # fmt: skip
FLORENCE2_TASKS: tuple[str, ...] = (
    "region_caption", "dense_region_caption", "region_proposal", "caption", "detailed_caption",
    "more_detailed_caption", "caption_to_phrase_grounding", "referring_expression_segmentation",
    "ocr", "ocr_with_region", "docvqa", "prompt_gen_tags", "prompt_gen_mixed_caption",
    "prompt_gen_analyze", "prompt_gen_mixed_caption_plus",
)  # fmt: skip

ANY = "*"
# Model folders ComfyUI's main.py also reads from output/ (`add_model_folder_path`).
OUTPUT_MODEL_FOLDERS: frozenset[str] = frozenset(
    {"checkpoints", "clip", "vae", "diffusion_models", "loras"}
)


class Folders:
    """The stand-in's directory layout under one root: input/, output/, temp/, models/<key>/."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.input = self.root / "input"
        self.output = self.root / "output"
        self.temp = self.root / "temp"
        self.models = self.root / "models"

    def by_type(self, kind: str | None) -> Path | None:
        """The directory for a `/view` or upload `type`, None for an unknown type."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind or "")

    def model_dirs(self, folder: str) -> list[Path]:
        """Where ComfyUI looks for `folder`'s files, in order: models/<folder>, then, for the
        folders main.py adds, output/<folder> (so a LoRA SaveLoRANode just wrote is listed)."""
        dirs = [self.models / folder]
        if folder in OUTPUT_MODEL_FOLDERS:
            dirs.append(self.output / folder)
        return dirs

    def model_files(self, folder: str) -> list[str]:
        """Relative file names (with `/`) of the model files of `folder`, sorted, each once."""
        out: set[str] = set()
        for base in self.model_dirs(folder):
            if not base.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(base, followlinks=True):
                for name in files:
                    if Path(name).suffix.lower() in MODEL_EXTENSIONS:
                        out.add(Path(dirpath, name).relative_to(base).as_posix())
        return sorted(out)

    def model_path(self, folder: str, name: str) -> Path | None:
        """The full path of a listed model file (the first folder that has it, as ComfyUI's
        get_full_path), None when it does not exist or escapes."""
        for directory in self.model_dirs(folder):
            base = directory.resolve()
            path = (base / name).resolve()
            if base in path.parents and path.is_file():
                return path
        return None

    def input_images(self) -> list[str]:
        """Top-level image files of input/ (LoadImage's list), sorted."""
        if not self.input.is_dir():
            return []
        out = []
        for entry in os.scandir(self.input):
            if entry.is_file():
                kind = mimetypes.guess_type(entry.name)[0] or ""
                if kind.startswith("image") or entry.name.lower().endswith(".webp"):
                    out.append(entry.name)
        return sorted(out)

    def annotated(self, name: str) -> Path:
        """Resolve LoadImage's `name`, `sub/name` or `name [output]` to a path."""
        kind = "input"
        for suffix in ("output", "input", "temp"):
            tag = f" [{suffix}]"
            if name.endswith(tag):
                name, kind = name[: -len(tag)], suffix
                break
        base = self.by_type(kind) or self.input
        return base / name

    def embeddings(self) -> list[str]:
        return [os.path.splitext(f)[0] for f in self.model_files("embeddings")]


ComboSource = tuple[str, ...] | Callable[[Folders], list[str]]


@dataclass(frozen=True)
class InputSpec:
    """One input: a link type ("IMAGE"), a widget type ("INT", ...) or "COMBO" with choices."""

    name: str
    type: str
    extra: dict[str, Any] = field(default_factory=dict)
    choices: ComboSource | None = None
    # A legacy node that declares its input as `(type, {})` shows `[type, {}]`, one that
    # declares `(type,)` shows `[type]`: a client may index either, so both are kept.
    empty_extra: bool = False


@dataclass(frozen=True)
class NodeSpec:
    """A node class as `/object_info` describes it."""

    class_type: str
    display_name: str | None  # a V3 node without one shows null, as 0.3.64 does
    category: str
    required: tuple[InputSpec, ...]
    outputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] | None = None
    optional: tuple[InputSpec, ...] = ()
    hidden: dict[str, Any] = field(default_factory=dict)
    output_node: bool = False
    description: str = ""
    python_module: str = "nodes"
    v3: bool = False
    # A legacy node's EXPERIMENTAL flag: shown as `"experimental": true` only when set.
    experimental: bool = False
    output_tooltips: tuple[str | None, ...] | None = None
    # Inputs checked by the node's own validator instead of the type/range/list checks.
    custom_validated: frozenset[str] = frozenset()

    def inputs(self) -> Iterator[tuple[str, InputSpec]]:
        """(category, spec) for every required then optional input, in declaration order."""
        for spec in self.required:
            yield "required", spec
        for spec in self.optional:
            yield "optional", spec


def combo_options(spec: InputSpec, folders: Folders) -> list[str]:
    if spec.choices is None:
        return []
    if callable(spec.choices):
        return list(spec.choices(folders))
    return list(spec.choices)


def input_config(node: NodeSpec, spec: InputSpec, folders: Folders) -> list[Any]:
    """The `[type, options]` pair exactly as `/object_info` shows it (and errors echo it)."""
    if spec.type == "COMBO":
        options = combo_options(spec, folders)
        if node.v3:
            return ["COMBO", {"multiselect": False, "options": options, **spec.extra}]
        return [options, dict(spec.extra)] if spec.extra else [options]
    shown = spec.extra or node.v3 or spec.empty_extra
    return [spec.type, dict(spec.extra)] if shown else [spec.type]


def input_info(node: NodeSpec, spec: InputSpec, folders: Folders) -> tuple[Any, dict[str, Any]]:
    """(input_type, extra_info) as ComfyUI's validator sees them (a legacy combo: the list)."""
    config = input_config(node, spec, folders)
    extra = config[1] if len(config) > 1 else {}
    return config[0], extra


def object_info(node: NodeSpec, folders: Folders) -> dict[str, Any]:
    """The `/object_info/{class}` entry of v0.3.64 (legacy or V3 key set)."""
    inputs: dict[str, Any] = {
        "required": {s.name: input_config(node, s, folders) for s in node.required}
    }
    if node.optional:
        inputs["optional"] = {s.name: input_config(node, s, folders) for s in node.optional}
    if node.hidden:
        inputs["hidden"] = dict(node.hidden)
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": list(node.outputs),
        "output_is_list": [False] * len(node.outputs),
        "output_name": list(node.output_names or node.outputs),
        "name": node.class_type,
        "display_name": node.display_name,
        "description": node.description,
        "python_module": node.python_module,
        "category": node.category,
        "output_node": node.output_node,
    }
    if node.v3:
        tooltips = node.output_tooltips or tuple(None for _ in node.outputs)
        info["output_tooltips"] = list(tooltips)
        info["deprecated"] = False
        info["experimental"] = False
        info["api_node"] = False
    else:
        if node.output_tooltips is not None:
            info["output_tooltips"] = list(node.output_tooltips)
        if node.experimental:
            info["experimental"] = True
    return info


def _models(folder: str) -> Callable[[Folders], list[str]]:
    def choices(folders: Folders) -> list[str]:
        return folders.model_files(folder)

    return choices


def _inp(name: str, type_: str, **extra: Any) -> InputSpec:
    return InputSpec(name, type_, extra)


def _combo(name: str, choices: ComboSource, **extra: Any) -> InputSpec:
    return InputSpec(name, "COMBO", extra, choices)


_SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODE_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec(
        "CheckpointLoaderSimple",
        "Load Checkpoint",
        "loaders",
        (
            _combo(
                "ckpt_name",
                _models("checkpoints"),
                tooltip="The name of the checkpoint (model) to load.",
            ),
        ),
        ("MODEL", "CLIP", "VAE"),
        description=(
            "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
        ),
        output_tooltips=(
            "The model used for denoising latents.",
            "The CLIP model used for encoding text prompts.",
            "The VAE model used for encoding and decoding images to and from latent space.",
        ),
    ),
    NodeSpec(
        "CLIPTextEncode",
        "CLIP Text Encode (Prompt)",
        "conditioning",
        (
            _inp(
                "text",
                "STRING",
                multiline=True,
                dynamicPrompts=True,
                tooltip="The text to be encoded.",
            ),
            _inp("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ),
        ("CONDITIONING",),
        description=(
            "Encodes a text prompt using a CLIP model into an embedding that can be used to "
            "guide the diffusion model towards generating specific images."
        ),
        output_tooltips=(
            "A conditioning containing the embedded text used to guide the diffusion model.",
        ),
    ),
    NodeSpec(
        "EmptyLatentImage",
        "Empty Latent Image",
        "latent",
        (
            _inp(
                "width",
                "INT",
                default=512,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The width of the latent images in pixels.",
            ),
            _inp(
                "height",
                "INT",
                default=512,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The height of the latent images in pixels.",
            ),
            _inp(
                "batch_size",
                "INT",
                default=1,
                min=1,
                max=4096,
                tooltip="The number of latent images in the batch.",
            ),
        ),
        ("LATENT",),
        description="Create a new batch of empty latent images to be denoised via sampling.",
        output_tooltips=("The empty latent image batch.",),
    ),
    NodeSpec(
        "KSampler",
        "KSampler",
        "sampling",
        (
            _inp("model", "MODEL", tooltip="The model used for denoising the input latent."),
            _inp(
                "seed",
                "INT",
                default=0,
                min=0,
                max=MAX_SEED,
                control_after_generate=True,
                tooltip="The random seed used for creating the noise.",
            ),
            _inp(
                "steps",
                "INT",
                default=20,
                min=1,
                max=10000,
                tooltip="The number of steps used in the denoising process.",
            ),
            _inp(
                "cfg",
                "FLOAT",
                default=8.0,
                min=0.0,
                max=100.0,
                step=0.1,
                round=0.01,
                tooltip="The Classifier-Free Guidance scale.",
            ),
            _combo("sampler_name", SAMPLERS, tooltip="The algorithm used when sampling."),
            _combo(
                "scheduler",
                SCHEDULERS,
                tooltip="The scheduler controls how noise is gradually removed.",
            ),
            _inp(
                "positive",
                "CONDITIONING",
                tooltip="The conditioning describing the attributes to include.",
            ),
            _inp(
                "negative",
                "CONDITIONING",
                tooltip="The conditioning describing the attributes to exclude.",
            ),
            _inp("latent_image", "LATENT", tooltip="The latent image to denoise."),
            _inp(
                "denoise",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="The amount of denoising applied.",
            ),
        ),
        ("LATENT",),
        description="Uses the provided model, positive and negative conditioning to denoise "
        "the latent image.",
        output_tooltips=("The denoised latent.",),
    ),
    NodeSpec(
        "VAEDecode",
        "VAE Decode",
        "latent",
        (
            _inp("samples", "LATENT", tooltip="The latent to be decoded."),
            _inp("vae", "VAE", tooltip="The VAE model used for decoding the latent."),
        ),
        ("IMAGE",),
        description="Decodes latent images back into pixel space images.",
        output_tooltips=("The decoded image.",),
    ),
    NodeSpec(
        "VAEEncode",
        "VAE Encode",
        "latent",
        (_inp("pixels", "IMAGE"), _inp("vae", "VAE")),
        ("LATENT",),
    ),
    NodeSpec(
        "ImageBatch",
        "Batch Images",
        "image",
        (_inp("image1", "IMAGE"), _inp("image2", "IMAGE")),
        ("IMAGE",),
    ),
    NodeSpec(
        "SaveImage",
        "Save Image",
        "image",
        (
            _inp("images", "IMAGE", tooltip="The images to save."),
            _inp(
                "filename_prefix",
                "STRING",
                default="ComfyUI",
                tooltip="The prefix for the file to save.",
            ),
        ),
        hidden=_SAVE_HIDDEN,
        output_node=True,
        description="Saves the input images to your ComfyUI output directory.",
    ),
    NodeSpec(
        "PreviewImage",
        "Preview Image",
        "image",
        (_inp("images", "IMAGE"),),
        hidden=_SAVE_HIDDEN,
        output_node=True,
        description="Saves the input images to your ComfyUI output directory.",
    ),
    NodeSpec(
        "LoadImage",
        "Load Image",
        "image",
        (_combo("image", lambda f: f.input_images(), image_upload=True),),
        ("IMAGE", "MASK"),
        custom_validated=frozenset({"image"}),
    ),
    NodeSpec(
        "ImageScale",
        "Upscale Image",
        "image/upscaling",
        (
            _inp("image", "IMAGE"),
            _combo("upscale_method", UPSCALE_METHODS),
            _inp("width", "INT", default=512, min=0, max=MAX_RESOLUTION, step=1),
            _inp("height", "INT", default=512, min=0, max=MAX_RESOLUTION, step=1),
            _combo("crop", CROP_METHODS),
        ),
        ("IMAGE",),
    ),
    NodeSpec(
        "ImageScaleBy",
        "Upscale Image By",
        "image/upscaling",
        (
            _inp("image", "IMAGE"),
            _combo("upscale_method", UPSCALE_METHODS),
            _inp("scale_by", "FLOAT", default=1.0, min=0.01, max=8.0, step=0.01),
        ),
        ("IMAGE",),
    ),
    NodeSpec(
        "LoraLoader",
        "Load LoRA",
        "loaders",
        (
            _inp("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            _inp("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
            _combo("lora_name", _models("loras"), tooltip="The name of the LoRA."),
            _inp(
                "strength_model",
                "FLOAT",
                default=1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the diffusion model.",
            ),
            _inp(
                "strength_clip",
                "FLOAT",
                default=1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the CLIP model.",
            ),
        ),
        ("MODEL", "CLIP"),
        description="LoRAs are used to modify diffusion and CLIP models.",
        output_tooltips=("The modified diffusion model.", "The modified CLIP model."),
    ),
    NodeSpec(
        "UpscaleModelLoader",
        "Load Upscale Model",
        "loaders",
        (_combo("model_name", _models("upscale_models")),),
        ("UPSCALE_MODEL",),
        python_module="comfy_extras.nodes_upscale_model",
    ),
    NodeSpec(
        "ImageUpscaleWithModel",
        "Upscale Image (using Model)",
        "image/upscaling",
        (_inp("upscale_model", "UPSCALE_MODEL"), _inp("image", "IMAGE")),
        ("IMAGE",),
        python_module="comfy_extras.nodes_upscale_model",
    ),
    NodeSpec(
        "ImageScaleToTotalPixels",
        None,
        "image/upscaling",
        (
            _inp("image", "IMAGE"),
            _combo("upscale_method", UPSCALE_METHODS),
            _inp("megapixels", "FLOAT", default=1.0, min=0.01, max=16.0, step=0.01),
        ),
        ("IMAGE",),
        python_module="comfy_extras.nodes_post_processing",
        v3=True,  # one of 0.3.64's schema-V3 core nodes: its combo reads ["COMBO", {...}]
    ),
    NodeSpec(
        "LoadBackgroundRemovalModel",
        "Load Background Removal Model",
        "loaders",
        (
            _combo(
                "bg_removal_name",
                _models("background_removal"),
                tooltip="The model used to remove backgrounds from images",
            ),
        ),
        ("BACKGROUND_REMOVAL",),
        ("bg_model",),
        python_module="comfy_extras.nodes_bg_removal",
        v3=True,
    ),
    NodeSpec(
        "RemoveBackground",
        "Remove Background",
        "image/background removal",
        (
            _inp("image", "IMAGE", tooltip="Input image to remove the background from"),
            _inp(
                "bg_removal_model",
                "BACKGROUND_REMOVAL",
                tooltip="Background removal model used to generate the mask",
            ),
        ),
        ("MASK",),
        ("mask",),
        optional=(_inp("resolution", "INT", default=1024, min=256, max=4096, step=32),),
        python_module="comfy_extras.nodes_bg_removal",
        v3=True,
        output_tooltips=("Generated foreground mask",),
    ),
    NodeSpec(
        "InvertMask",
        "InvertMask",
        "mask",
        (_inp("mask", "MASK"),),
        ("MASK",),
        python_module="comfy_extras.nodes_mask",
    ),
    NodeSpec(
        "JoinImageWithAlpha",
        "Join Image with Alpha",
        "mask/compositing",
        (_inp("image", "IMAGE"), _inp("alpha", "MASK")),
        ("IMAGE",),
        python_module="comfy_extras.nodes_compositing",
    ),
    NodeSpec(
        "PreviewAny",
        "Preview Any",
        "utils",
        (InputSpec("source", ANY, empty_extra=True),),
        output_node=True,
        python_module="comfy_extras.nodes_preview_any",
    ),
    NodeSpec(
        "DownloadAndLoadFlorence2Model",
        "DownloadAndLoadFlorence2Model",
        "Florence2",
        (
            _combo("model", FLORENCE2_MODELS, default="microsoft/Florence-2-base"),
            _combo("precision", ("fp16", "bf16", "fp32"), default="fp16"),
            _combo("attention", ("flash_attention_2", "sdpa", "eager"), default="sdpa"),
        ),
        ("FL2MODEL",),
        ("florence2_model",),
        optional=(_inp("lora", "PEFTLORA"),),
        python_module="custom_nodes.ComfyUI-Florence2",
    ),
    NodeSpec(
        "Florence2Run",
        "Florence2Run",
        "Florence2",
        (
            _inp("image", "IMAGE"),
            _inp("florence2_model", "FL2MODEL"),
            _inp("text_input", "STRING", default="", multiline=True),
            _combo("task", FLORENCE2_TASKS),
            _inp("fill_mask", "BOOLEAN", default=True),
        ),
        ("IMAGE", "MASK", "STRING", "JSON"),
        ("image", "mask", "caption", "data"),
        optional=(
            _inp("keep_model_loaded", "BOOLEAN", default=False),
            _inp("max_new_tokens", "INT", default=1024, min=1, max=4096),
            _inp("num_beams", "INT", default=3, min=1, max=64),
            _inp("do_sample", "BOOLEAN", default=True),
            _inp("output_mask_select", "STRING", default=""),
            _inp("seed", "INT", default=1, min=1, max=MAX_SEED),
        ),
        python_module="custom_nodes.ComfyUI-Florence2",
    ),
)


def _input_folders(folders: Folders) -> list[str]:
    """Subfolders of input/ (LoadImageTextDataSetFromFolder's `folder` list), sorted."""
    if not folders.input.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folders.input) if e.is_dir())


def _existing_loras(folders: Folders) -> list[str]:
    return [*folders.model_files("loras"), "[None]"]  # ComfyUI's order: the files, then none


_TRAIN = "comfy_extras.nodes_train"

# docs/comfyui-protocol.md §8.1 (newer, schema-v3 nodes): training, saving and applying an
# in-graph LoRA.
TRAINING_NODE_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec(
        "LoadImageTextDataSetFromFolder",
        "Load Image and Text Dataset from Folder",
        "dataset",
        (_combo("folder", _input_folders, tooltip="The folder to load images from."),),
        ("IMAGE", "STRING"),
        ("images", "texts"),
        python_module="comfy_extras.nodes_dataset",
        v3=True,
    ),
    NodeSpec(
        "MakeTrainingDataset",
        "Make Training Dataset",
        "dataset",
        (_inp("images", "IMAGE"), _inp("vae", "VAE"), _inp("clip", "CLIP")),
        ("LATENT", "CONDITIONING"),
        ("latents", "conditioning"),
        optional=(_inp("texts", "STRING", forceInput=True),),
        python_module="comfy_extras.nodes_dataset",
        v3=True,
    ),
    NodeSpec(
        "TrainLoraNode",
        "Train LoRA",
        "training",
        (
            _inp("model", "MODEL"),
            _inp("latents", "LATENT"),
            _inp("positive", "CONDITIONING"),
            _inp("batch_size", "INT", default=1, min=1, max=10000),
            _inp("grad_accumulation_steps", "INT", default=1, min=1, max=1024),
            _inp("steps", "INT", default=16, min=1, max=100000),
            _inp("learning_rate", "FLOAT", default=0.0005, min=0.0000001, max=1.0, step=0.0000001),
            _inp("rank", "INT", default=8, min=1, max=128),
            _combo("optimizer", ("AdamW", "Adam", "SGD", "RMSprop"), default="AdamW"),
            _combo("loss_function", ("MSE", "L1", "Huber", "SmoothL1"), default="MSE"),
            _inp("seed", "INT", default=0, min=0, max=MAX_SEED),
            _combo("training_dtype", ("bf16", "fp32", "none"), default="bf16"),
            _combo("lora_dtype", ("bf16", "fp32"), default="bf16"),
            _inp("quantized_backward", "BOOLEAN", default=False),
            _combo("algorithm", ("LoRA", "LoHa", "LoKr", "OFT"), default="LoRA"),
            _inp("gradient_checkpointing", "BOOLEAN", default=True),
            _inp("checkpoint_depth", "INT", default=1, min=1, max=5),
            _inp("offloading", "BOOLEAN", default=False),
            _combo("existing_lora", _existing_loras, default="[None]"),
            _inp("bucket_mode", "BOOLEAN", default=False),
            _inp("bypass_mode", "BOOLEAN", default=False),
        ),
        ("LORA_MODEL", "LOSS_MAP", "INT"),
        ("lora", "loss_map", "steps"),
        python_module=_TRAIN,
        v3=True,
    ),
    NodeSpec(
        "SaveLoRA",
        "Save LoRA Weights",
        "loaders",
        (
            _inp("lora", "LORA_MODEL"),
            _inp("prefix", "STRING", default="loras/ComfyUI_trained_lora"),
        ),
        optional=(_inp("steps", "INT", forceInput=True),),
        output_node=True,
        python_module=_TRAIN,
        v3=True,
    ),
    NodeSpec(
        "LoraModelLoader",
        "Load LoRA Model",
        "loaders",
        (
            _inp("model", "MODEL"),
            _inp("lora", "LORA_MODEL"),
            _inp("strength_model", "FLOAT", default=1.0, min=-100.0, max=100.0, step=0.01),
            _inp("bypass", "BOOLEAN", default=False),
        ),
        ("MODEL",),
        ("model",),
        python_module=_TRAIN,
        v3=True,
    ),
    NodeSpec(
        "LossGraphNode",
        "Plot Loss Graph",
        "training",
        (
            _inp("loss", "LOSS_MAP"),
            _inp("filename_prefix", "STRING", default="loss_graph"),
        ),
        hidden={"prompt": "PROMPT"},
        output_node=True,
        python_module=_TRAIN,
        v3=True,
    ),
)

NODE_SPECS = NODE_SPECS + TRAINING_NODE_SPECS

NODES: dict[str, NodeSpec] = {spec.class_type: spec for spec in NODE_SPECS}

# Folder keys of GET /models, in ComfyUI's order.
MODEL_FOLDER_KEYS: tuple[str, ...] = MODEL_FOLDERS


# ComfyUI 0.3.64 core's training nodes (comfy_extras/nodes_train.py of that release, legacy
# node classes marked EXPERIMENTAL, as a real 0.3.64 answers them): no dataset-folder nodes, a
# TrainLoraNode that takes LATENT + CONDITIONING with fewer options and has four outputs
# (model_with_lora, lora, loss, steps), the save node's id `SaveLoRANode` (a later core renamed
# it `SaveLoRA`), and a LoraModelLoader without `bypass`. `python -m standins.comfyui
# --training-nodes core-0.3.64` serves these, so the train-lora template's `core-0.3.64`
# variant can be run against a server that lacks the newer nodes.
TRAINING_NODE_SPECS_0_3_64: tuple[NodeSpec, ...] = (
    NodeSpec(
        "TrainLoraNode",
        "Train LoRA",
        "training",
        (
            _inp("model", "MODEL", tooltip="The model to train the LoRA on."),
            _inp("latents", "LATENT", tooltip="The Latents to use for training."),
            _inp("positive", "CONDITIONING", tooltip="The positive conditioning for training."),
            _inp("batch_size", "INT", default=1, min=1, max=10000, step=1),
            _inp("grad_accumulation_steps", "INT", default=1, min=1, max=1024, step=1),
            _inp("steps", "INT", default=16, min=1, max=100000),
            _inp("learning_rate", "FLOAT", default=0.0005, min=0.0000001, max=1.0, step=0.000001),
            _inp("rank", "INT", default=8, min=1, max=128),
            _combo("optimizer", ("AdamW", "Adam", "SGD", "RMSprop"), default="AdamW"),
            _combo("loss_function", ("MSE", "L1", "Huber", "SmoothL1"), default="MSE"),
            _inp("seed", "INT", default=0, min=0, max=MAX_SEED),
            _combo("training_dtype", ("bf16", "fp32"), default="bf16"),
            _combo("lora_dtype", ("bf16", "fp32"), default="bf16"),
            _combo("algorithm", ("LoRA", "LoHa", "LoKr", "OFT"), default="LoRA"),
            _inp("gradient_checkpointing", "BOOLEAN", default=True),
            _combo("existing_lora", _existing_loras, default="[None]"),
        ),
        ("MODEL", "LORA_MODEL", "LOSS_MAP", "INT"),
        ("model_with_lora", "lora", "loss", "steps"),
        python_module=_TRAIN,
        experimental=True,
    ),
    NodeSpec(
        "SaveLoRANode",
        "Save LoRA Weights",
        "loaders",
        (
            _inp("lora", "LORA_MODEL", tooltip="The LoRA model to save."),
            _inp("prefix", "STRING", default="loras/ComfyUI_trained_lora"),
        ),
        optional=(_inp("steps", "INT", forceInput=True),),
        output_node=True,
        python_module=_TRAIN,
        experimental=True,
    ),
    NodeSpec(
        "LoraModelLoader",
        "Load LoRA Model",
        "loaders",
        (
            _inp("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            _inp("lora", "LORA_MODEL", tooltip="The LoRA model to apply to the diffusion model."),
            _inp("strength_model", "FLOAT", default=1.0, min=-100.0, max=100.0, step=0.01),
        ),
        ("MODEL",),
        python_module=_TRAIN,
        experimental=True,
        output_tooltips=("The modified diffusion model.",),
    ),
    NodeSpec(
        "LossGraphNode",
        "Plot Loss Graph",
        "training",
        (
            _inp("loss", "LOSS_MAP", default={}),
            _inp("filename_prefix", "STRING", default="loss_graph"),
        ),
        hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        output_node=True,
        python_module=_TRAIN,
        experimental=True,
    ),
)
TRAINING_NODE_SETS: tuple[str, ...] = ("newer", "core-0.3.64")


def use_training_nodes(name: str) -> None:
    """Serve the training nodes of `name` (process-wide: one stand-in process is one server)."""
    if name not in TRAINING_NODE_SETS:
        raise ValueError(f"training nodes: one of {', '.join(TRAINING_NODE_SETS)}, got {name!r}")
    for spec in TRAINING_NODE_SPECS:
        NODES[spec.class_type] = spec
    NODES.pop("SaveLoRANode", None)
    if name == "core-0.3.64":
        del NODES["LoadImageTextDataSetFromFolder"], NODES["MakeTrainingDataset"]
        del NODES["SaveLoRA"]
        for spec in TRAINING_NODE_SPECS_0_3_64:
            NODES[spec.class_type] = spec


def drop_nodes(names: list[str]) -> None:
    """Serve none of the node types `names` (a server without some custom nodes installed)."""
    for name in names:
        NODES.pop(name.strip(), None)


def legacy_train_outputs() -> bool:
    """Whether TrainLoraNode has 0.3.64's four outputs (the model first)."""
    return NODES["TrainLoraNode"].outputs[0] == "MODEL"
