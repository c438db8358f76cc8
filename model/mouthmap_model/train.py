"""Train the reference model on the crops `data build` made.

    python -m mouthmap_model.train --data data --run runs/lipnet --minutes 80 [--recipe v1]

Samples mix whole clips, 1-3-word segments cut by the alignments (a curriculum
that dominates the first epochs and gets the model off the CTC plateau), and
75-frame windows cut across two joined clips, labelled with the words whose
middle lies inside the window (what the streaming inferencer sees).

Recipe v2 (the default): every clip re-timed as a jittery source delivers it
(frame rate up to 10% off, frames repeated or dropped, alignments moved
with them), flips, shifts, scales and small rotations, brightness and
contrast, time masking, a moving average of the weights (evaluated and
exported), FP32 in channels-last layout. Recipe v1 (`--recipe v1`, the
committed model): milder augmentation, 4% repeated frames, bf16 autocast.
A one-cycle learning rate sized to the time budget, a checkpoint after every
evaluation (resume with --resume), a log in RUN/log.jsonl, and the best
model by validation WER in RUN/best.pt.

Regularisers off by default, each measured in MODEL_CARD.md's ablation
table: `--label-smoothing W` (CTC's form: a uniform-distribution term per
frame) and `--inter-ctc W` (a training-only CTC head on the first GRU
layer, `net.Intermediate`)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data as D
from .carry import summary
from .metrics import cer, greedy_decode, wer
from .net import FrameWords, Intermediate, LipNet, channels_of, load_checkpoint

T = 75


class Sampler:
    """Draws training samples: (frames [t, H, W] uint8, text, each frame's
    word by the alignments, see `data.frame_words`).

    Every clip is first re-timed as a camera or an RTMP publisher would
    deliver it (`retime`): a small frame-rate change and, now and then, a
    frame repeated or dropped; the word alignments move with the frames, so
    labels stay exact."""

    def __init__(
        self,
        manifest: dict,
        arrays: dict[str, np.ndarray],
        seed: int,
        retime: bool = True,
        alt: dict[str, np.ndarray] | None = None,
        alt_share: float = 0.0,
    ):
        self.rng = random.Random(seed)
        self.train = [e for e in manifest["clips"] if e["split"] == "train"]
        self.arrays = arrays
        self.retime_frames = retime
        # The same clips cropped another way (the box tracked between
        # detections), drawn for a share of the samples.
        self.alt = alt or {}
        self.alt_share = alt_share
        self.vocab = {w: i for i, w in enumerate(sorted({w[0] for e in self.train for w in e["words"]}))}

    def _clip(self, e: dict) -> tuple[np.ndarray, list]:
        x = self.arrays[e["clip"]]
        if e["clip"] in self.alt and self.rng.random() < self.alt_share:
            x = self.alt[e["clip"]]
        words = [tuple(w) for w in e["words"]]
        if self.retime_frames:
            x, words = retime(x, words, self.rng)
        return x, words

    def _joined(self):
        (xa, wa), (xb, wb) = self._clip(self.rng.choice(self.train)), self._clip(self.rng.choice(self.train))
        words = wa + [(w, s + len(xa), e + len(xa)) for w, s, e in wb]
        return np.concatenate([xa, xb]), words, len(xa)

    def _cut(self, x: np.ndarray, words: list, o: int):
        inside = [w for w, s, e in words if o <= (s + e) / 2 < o + T]
        part = x[o : o + T]
        return part, " ".join(inside), D.frame_words(len(part), words, o, self.vocab)

    def whole(self):
        x, words = self._clip(self.rng.choice(self.train))
        return self._cut(x, words, 0)

    def shifted(self):
        """A whole clip that does not start at the window's first frame: the
        end of another clip comes first (a streaming window rarely starts
        exactly where a sentence does). Without these the model learns to
        emit a sentence's first letter at frame 0 and misses it mid-stream."""
        x, words, first = self._joined()
        return self._cut(x, words, max(0, first - self.rng.randint(1, 30)))

    def segment(self):
        x, words = self._clip(self.rng.choice(self.train))
        n = self.rng.randint(1, min(3, len(words)))
        i = self.rng.randint(0, len(words) - n)
        chosen = words[i : i + n]
        start = max(0, chosen[0][1] - self.rng.randint(0, 3))
        end = min(len(x), chosen[-1][2] + self.rng.randint(0, 3))
        part = x[start:end][:T]
        return part, " ".join(w[0] for w in chosen), D.frame_words(len(part), words, start, self.vocab)

    def window(self):
        x, words, first = self._joined()
        return self._cut(x, words, self.rng.randint(1, max(1, first - 1)))

    def draw(self, progress: float, window_share: float = 0.35):
        if progress < 0.15:
            kinds, weights = ("segment", "whole"), (0.7, 0.3)
        else:
            rest = 1.0 - 0.15 - window_share
            kinds, weights = ("segment", "whole", "window", "shifted"), (0.15, rest / 2, window_share, rest / 2)
        kind = self.rng.choices(kinds, weights)[0]
        sample = getattr(self, kind)()
        if not sample[1].strip():
            return self.whole()
        return sample


def retime(x: np.ndarray, words: list, rng: random.Random, speed: float = 0.1, glitch: float = 0.03):
    """Frames as a jittery source delivers them: played at a rate up to
    `speed` off 25 fps (half the clips), and each frame repeated or dropped
    with probability `glitch`. Word boundaries follow the frames."""
    n = len(x)
    rate = rng.uniform(1 - speed, 1 + speed) if rng.random() < 0.5 else 1.0
    idx, pos = [], 0.0
    while pos < n:
        i = int(pos)
        r = rng.random()
        if r < glitch and idx:
            idx.append(idx[-1])  # repeated frame
        elif r < 2 * glitch:
            pos += rate  # dropped frame
            continue
        else:
            idx.append(i)
        pos += rate
    idx = np.minimum(np.array(idx, dtype=np.int64), n - 1)
    moved = []
    for w, s, e in words:
        ns, ne = int(np.searchsorted(idx, s)), int(np.searchsorted(idx, e))
        moved.append((w, ns, max(ne, ns + 1)))
    return x[idx], moved


def augment(x: torch.Tensor, rng: random.Random, time_mask: int = 2, mild: bool = False) -> torch.Tensor:
    """x: [t, H, W] float in 0..1. Flip, a small shift, scale and rotation
    (the same for every frame), brightness and contrast, and up to
    `time_mask` spans of up to 6 frames replaced by the clip's mean (the model
    has to read a word from its context, as when a face is lost for a moment).
    `mild`: recipe v1's ranges (no rotation, smaller shifts; 4% of frames
    repeat the previous one, v1's only timing augmentation)."""
    t = x.shape[0]
    if rng.random() < 0.5:
        x = x.flip(-1)
    if mild:
        for i in range(1, t):
            if rng.random() < 0.04:
                x[i] = x[i - 1]
    s = rng.uniform(0.93, 1.07) if mild else rng.uniform(0.9, 1.1)
    a = 0.0 if mild else math.radians(rng.uniform(-5.0, 5.0))
    tx, ty = (rng.uniform(-0.06, 0.06), rng.uniform(-0.08, 0.08)) if mild else (rng.uniform(-0.08, 0.08), rng.uniform(-0.1, 0.1))
    theta = torch.tensor(
        [[s * math.cos(a), -s * math.sin(a), tx], [s * math.sin(a), s * math.cos(a), ty]], dtype=x.dtype
    ).to(x.device)
    theta = theta.unsqueeze(0).expand(t, 2, 3)
    grid = F.affine_grid(theta, (t, 1, *x.shape[1:]), align_corners=False)
    x = F.grid_sample(x.unsqueeze(1), grid, padding_mode="border", align_corners=False).squeeze(1)
    x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08) if mild else x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if t > 20:
        mean = x.mean()
        for _ in range(rng.randint(0, time_mask)):
            w = rng.randint(1, 6)
            o = rng.randint(0, t - w)
            x[o : o + w] = mean
    return x


def batch(
    samples,
    mean: float,
    std: float,
    rng: random.Random | None,
    time_mask: int = 2,
    mild: bool = False,
    device: torch.device | str = "cpu",
):
    """Samples as a batch on `device` (augmented there: on a GPU the CPU
    only cuts the samples)."""
    xs, targets, in_lens, tgt_lens = [], [], [], []
    for frames, text, *_ in samples:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float() / 255.0
        if rng is not None:
            x = augment(x, rng, time_mask, mild)
        n = x.shape[0]
        x = (x - mean) / std
        if n < T:
            x = torch.cat([x, torch.zeros(T - n, *x.shape[1:], device=x.device)])
        xs.append(x)
        ids = D.encode(text)
        targets.extend(ids)
        in_lens.append(n)
        tgt_lens.append(len(ids))
    return (
        torch.stack(xs).unsqueeze(1),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(in_lens, dtype=torch.long),
        torch.tensor(tgt_lens, dtype=torch.long),
    )


def word_targets(samples, device: torch.device | str = "cpu") -> torch.Tensor:
    """The samples' frame words (`Sampler`'s third element) as [B, T],
    frames past a sample's end -100 (ignored by the cross-entropy)."""
    out = torch.full((len(samples), T), -100, dtype=torch.long)
    for i, (_, _, words) in enumerate(samples):
        out[i, : len(words)] = torch.from_numpy(words)
    return out.to(device)


@torch.no_grad()
def evaluate(net, manifest, arrays, mean, std, device="cpu"):
    net.eval()
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    hyps, refs = [], []
    for i in range(0, len(val), 16):
        part = val[i : i + 16]
        x, _, lens, _ = batch([(arrays[e["clip"]][:T], e["text"]) for e in part], mean, std, None, device=device)
        probs = net(x).float().softmax(-1).cpu()
        for j, e in enumerate(part):
            hyps.append(greedy_decode(probs[j, : lens[j]].numpy(), D.VOCAB, D.BLANK))
            refs.append(e["text"])
    net.train()
    return cer(hyps, refs), wer(hyps, refs), list(zip(hyps[:3], refs[:3]))


def same_width(ckpt: dict, args: argparse.Namespace, flag: str) -> None:
    """A checkpoint's network must be the width this run builds: say which flags give it."""
    recipe = ckpt.get("recipe") or {}
    theirs = (channels_of(recipe.get("channels")), int(recipe.get("hidden") or 256))
    ours = (channels_of(args.channels), args.hidden)
    if theirs != ours:
        raise SystemExit(
            f"{flag}: the checkpoint's network has channels {','.join(map(str, theirs[0]))} and GRU {theirs[1]}, "
            f"this run builds {','.join(map(str, ours[0]))} and {ours[1]}: add "
            f"--channels {','.join(map(str, theirs[0]))} --hidden {theirs[1]}"
        )


def smoothing(logp: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a uniform distribution over the classes against the
    model's, averaged over each sample's frames (`logp` [T, B, C] log
    probabilities, `lengths` [B] frames): smallest (log C) when every frame
    is uniform, so added to CTC it penalises overconfident frames."""
    t = torch.arange(logp.shape[0], device=logp.device)[:, None]
    mask = (t < lengths[None, :].to(logp.device)).float()  # [T, B]
    per_frame = -logp.mean(-1)  # [T, B]
    return (per_frame * mask).sum() / mask.sum().clamp(min=1)


def on_cpu(obj):
    """A state dict (or an optimiser's, nested) with every tensor on the CPU:
    a checkpoint written on a GPU loads anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [on_cpu(v) for v in obj]
    return obj


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--run", default=str(D.REPO / "model" / "runs" / "lipnet"))
    p.add_argument("--minutes", type=float, default=80.0, help="training time budget")
    p.add_argument(
        "--steps",
        type=int,
        help="steps of the schedule, instead of sizing it to --minutes from a timing run "
        "(which a busy machine would make too short)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--channels",
        default="16,32,64",
        help="the three 3D convolutions' channels (LipNet's paper: 32,64,96); a checkpoint records them "
        "and export builds the same network",
    )
    p.add_argument("--hidden", type=int, default=256, help="GRU units per direction")
    p.add_argument("--peak-lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device",
        default="cpu",
        help="where the network trains and the samples are augmented: cpu, or cuda (a GPU; the "
        "sampler still runs on the CPU); checkpoints are written with CPU tensors either way",
    )
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--resume",
        help="checkpoint to continue from (same schedule): RUN/last.pt, or one slimmed to its "
        "weights (`python -m mouthmap_model.slim`, the form a run is committed in between "
        "sessions), whose optimiser starts afresh with a 200-step ramp of the learning rate",
    )
    p.add_argument(
        "--session-minutes",
        type=float,
        help="stop at the first checkpoint after this many minutes of this invocation, the "
        "schedule unchanged (a run longer than a session: resume it with --resume)",
    )
    p.add_argument(
        "--init",
        help="checkpoint whose weights start a fine-tune: a fresh one-cycle schedule of --minutes "
        "at --peak-lr, curriculum already done",
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (slower than FP32 on the Xeon and the EPYC this was trained on; default: off, "
        "on in recipe v1)",
    )
    p.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep PyTorch's default layout (channels-last 3D is about 25%% faster on CPU here)",
    )
    p.add_argument(
        "--window-share",
        type=float,
        default=0.35,
        help="share of samples that are windows across two clips (after the curriculum)",
    )
    p.add_argument(
        "--time-mask",
        type=int,
        default=None,
        help="most masked spans (up to 6 frames each) per sample; 0: none (default 2, 0 in recipe v1)",
    )
    p.add_argument("--no-retime", action="store_true", help="no frame-rate jitter, repeated or dropped frames")
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        help="decay of the exponential moving average of the weights kept beside them "
        "(from the end of warm-up; evaluated and exported); 0: none (default 0.999, 0 in recipe v1)",
    )
    p.add_argument(
        "--alt-data",
        help="crops of the same clips made another way (`data build --detect-every 5`: the box tracked "
        "between detections), drawn for --alt-share of the samples and evaluated beside the main ones; "
        "the best checkpoint is then the one with the best mean of the two validation WERs",
    )
    p.add_argument("--alt-share", type=float, default=0.5, help="share of samples cut from --alt-data's crops")
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        help="weight of a smoothing term added to the CTC loss: the mean over a sample's frames of the "
        "cross-entropy between a uniform distribution over the classes and the model's (CTC's form of "
        "label smoothing, which keeps the per-frame distributions from becoming overconfident spikes); "
        "0: none (the default; 0.1 is the usual strength)",
    )
    p.add_argument(
        "--inter-ctc",
        type=float,
        default=0.0,
        help="weight of intermediate CTC: a CTC head on the first GRU layer's output, its loss mixed "
        "in as (1 - W) * final + W * intermediate (Lee & Watanabe 2021; 0.3 is the usual weight). "
        "The head is training-only: the exported network is unchanged; 0: none (the default)",
    )
    p.add_argument(
        "--word-frames",
        type=float,
        default=0.0,
        help="weight of a frame-level word loss: a linear head on the GRU's output reads, on every "
        "frame, which word the alignments say is spoken there (or none), its cross-entropy added to the "
        "CTC loss (dense supervision for the visually close letters). The head is training-only: the "
        "exported network is unchanged; 0: none (the default)",
    )
    p.add_argument(
        "--recipe",
        choices=["v1", "v2"],
        default="v2",
        help="v1: the committed model's recipe (mild augmentation, 4%% repeated frames, no time masking, "
        "no re-timing, no moving average, bf16); v2: the flags above. Flags given explicitly win over "
        "either recipe's defaults (recipe v1 with --ema 0.999 --no-bf16: v1's augmentation with a moving "
        "average, in FP32)",
    )
    args = p.parse_args()
    v1 = args.recipe == "v1"
    args.no_retime = args.no_retime or v1
    defaults = {"time_mask": (0, 2), "ema": (0.0, 0.999), "bf16": (True, False)}
    for name, (in_v1, in_v2) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, in_v1 if v1 else in_v2)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no GPU here (torch.cuda.is_available() is False)")
        torch.backends.cudnn.benchmark = True
        # TF32 matrix products and convolutions: FP32's range, a 10-bit mantissa.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    manifest, arrays = D.load(Path(args.data))
    train_frames = np.concatenate([arrays[e["clip"]][::5] for e in manifest["clips"] if e["split"] == "train"])
    mean, std = float(train_frames.mean() / 255.0), float(train_frames.std() / 255.0)
    del train_frames
    alt_arrays = None
    if args.alt_data:
        alt_manifest, alt_arrays = D.load(Path(args.alt_data))
        if [e["clip"] for e in alt_manifest["clips"]] != [e["clip"] for e in manifest["clips"]]:
            raise SystemExit(f"{args.alt_data} does not hold the clips of {args.data}")
    sampler = Sampler(
        manifest, arrays, args.seed, retime=not args.no_retime, alt=alt_arrays, alt_share=args.alt_share
    )
    rng = random.Random(args.seed + 1)
    try:
        channels = channels_of(args.channels)
    except ValueError as e:
        raise SystemExit(f"--channels: {e}") from None
    net = LipNet(D.CLASSES, channels=channels, hidden=args.hidden)
    layout = torch.contiguous_format if args.no_channels_last else torch.channels_last_3d
    net = net.to(device=device, memory_format=layout)
    print(f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; mean {mean:.4f} std {std:.4f}", flush=True)
    if not 0.0 <= args.inter_ctc < 1.0:
        raise SystemExit(f"--inter-ctc {args.inter_ctc}: a weight from 0 (none) up to, not including, 1")
    inter = Intermediate(net).to(device) if args.inter_ctc > 0 else None
    if args.word_frames < 0:
        raise SystemExit(f"--word-frames {args.word_frames}: a weight of 0 (none) or more")
    if inter is not None and args.word_frames > 0:
        raise SystemExit("--word-frames and --inter-ctc: one training-only head at a time")
    words_net = FrameWords(net, len(sampler.vocab)).to(device) if args.word_frames > 0 else None
    trained = list(net.parameters()) + (list(inter.head.parameters()) if inter is not None else [])
    if words_net is not None:
        trained += list(words_net.head.parameters())
    opt = torch.optim.AdamW(trained, lr=args.peak_lr / 25, weight_decay=1e-2)
    ctc = torch.nn.CTCLoss(blank=D.BLANK, zero_infinity=True)
    use_bf16 = args.bf16

    # The weights' moving average: free at inference, usually a little better
    # than the last weights (evaluated beside them; the one exported).
    ema = copy.deepcopy(net) if args.ema > 0 else None

    @torch.no_grad()
    def update_ema(progress: float) -> None:
        if ema is None:
            return
        d = args.ema if progress >= 0.15 else 0.0
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.mul_(d).add_(pn.detach(), alpha=1 - d)
        for be, bn in zip(ema.buffers(), net.buffers()):
            be.copy_(bn)

    def step(samples) -> float:
        x, y, il, tl = batch(samples, mean, std, rng, args.time_mask, args.recipe == "v1", device)
        x = x.contiguous(memory_format=layout)
        y = y.to(device)  # CTC on a GPU takes its targets there
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if inter is not None:
                logits, mid = inter(x)
            elif words_net is not None:
                logits, word_logits = words_net(x)
            else:
                logits = net(x)
        logp = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
        loss = ctc(logp, y, il, tl)
        if words_net is not None:
            wt = word_targets(samples, device)
            loss = loss + args.word_frames * F.cross_entropy(word_logits.float().flatten(0, 1), wt.flatten())
        if inter is not None:
            mid_logp = mid.float().log_softmax(-1).transpose(0, 1)
            loss = (1 - args.inter_ctc) * loss + args.inter_ctc * ctc(mid_logp, y, il, tl)
        if args.label_smoothing > 0:
            loss = loss + args.label_smoothing * smoothing(logp, il)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 5.0)
        opt.step()
        return loss.item()

    start_step, best_wer, elapsed_before = 0, math.inf, 0.0
    state, resized = None, False
    if args.resume:
        state = load_checkpoint(args.resume, "--resume", device)
        same_width(state, args, "--resume")
        # The optimiser holds the training-only heads: a resumed run keeps them.
        for key in ("inter_ctc", "word_frames"):
            theirs, ours = float((state.get("recipe") or {}).get(key) or 0.0), getattr(args, key)
            flag = "--" + key.replace("_", "-")
            if (theirs > 0) != (ours > 0):
                raise SystemExit(
                    f"--resume: the run was trained with {flag} {theirs}, this one has {ours}: "
                    f"give {flag} {theirs} (or start from its weights with --init)"
                )
        net.load_state_dict(state["model"])
        if inter is not None and state.get("inter_head") is not None:
            inter.head.load_state_dict(state["inter_head"])
        if words_net is not None and state.get("word_head") is not None:
            words_net.head.load_state_dict(state["word_head"])
        if ema is not None:
            ema.load_state_dict(state.get("ema") or state["model"])
        if state.get("opt") is None:
            print("resuming from weights alone: a fresh optimiser, its learning rate ramped over 200 steps", flush=True)
        start_step, best_wer, elapsed_before = state["step"], state["best_wer"], state["elapsed"]
        # The random streams go on where they stopped; a checkpoint without
        # them (written before they were kept) reseeds by the step, so the
        # resumed run does not replay the samples of its first steps.
        if state.get("rng") is not None:
            sampler.rng.setstate(state["rng"]["sampler"])
            rng.setstate(state["rng"]["batch"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
        else:
            sampler.rng.seed(args.seed * 1_000_003 + start_step)
            rng.seed(args.seed * 1_000_003 + start_step + 1)
            torch.manual_seed(args.seed * 1_000_003 + start_step)
        mean, std = state["mean"], state["std"]
        total_steps = state["total_steps"]
        # A shorter (or longer) schedule than the run began with: the
        # learning rate follows the new one-cycle from this step on.
        resized = bool(args.steps) and args.steps != total_steps
        if resized:
            print(f"schedule resized: {total_steps} -> {args.steps} steps at step {start_step}", flush=True)
            total_steps = args.steps
    else:
        if args.init:
            init = load_checkpoint(args.init, "--init", device)
            same_width(init, args, "--init")
            net.load_state_dict(init["model"])
            if ema is not None:
                ema.load_state_dict(init["model"])
            mean, std = init["mean"], init["std"]
            print(f"fine-tuning from {args.init} (step {init['step']}, val WER {init['val_wer']:.4f})", flush=True)
        if args.steps:
            total_steps = args.steps
            print(f"{total_steps} steps of {args.batch}", flush=True)
        else:
            # Size the one-cycle schedule to the budget from a short timing
            # run: real steps at the starting learning rate, the first one
            # untimed (allocation and thread start-up made it 1.6x a later
            # step, and the schedule 40% short of its budget).
            # On a GPU: more steps each side (cuDNN picks its kernels in the
            # first ones), timed to the end of their kernels.
            warm, timed = (5, 20) if device.type == "cuda" else (1, 4)
            for _ in range(warm):
                step([sampler.draw(0.0) for _ in range(args.batch)])
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            sync()
            t0 = time.time()
            for _ in range(timed):
                step([sampler.draw(0.0) for _ in range(args.batch)])
            sync()
            per_step = (time.time() - t0) / timed
            total_steps = int(args.minutes * 60 / (per_step * 1.08))
            print(f"{per_step:.2f} s per step of {args.batch}: {total_steps} steps, about {total_steps * per_step / 60:.0f} min", flush=True)
    # A fine-tune (also one resumed) starts past the curriculum.
    finetune = bool(args.init or (state is not None and state.get("init")))
    if state is not None and state.get("init"):
        args.init = state["init"]
    full = state is not None and state.get("opt") is not None
    if full and resized:
        opt.load_state_dict(state["opt"])  # the new schedule then sets its groups
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.peak_lr, total_steps=total_steps + 1, pct_start=0.15, anneal_strategy="cos"
    )
    if full and not resized:
        sched.load_state_dict(state["sched"])
        # After the scheduler, which sets its own starting learning rate and
        # momentum in the optimiser's groups: the saved ones are this step's.
        opt.load_state_dict(state["opt"])
    elif state is not None:
        for _ in range(start_step):
            sched.step()
    # A fresh optimiser at a mid-schedule learning rate: ramped in, as Adam's
    # moments settle.
    ramp_until = start_step + 200 if state is not None and not full else 0

    def ramp(s: int) -> float:
        return min(1.0, (s + 1 - start_step) / (ramp_until - start_step)) if s < ramp_until else 1.0

    for g in opt.param_groups:
        g["lr"] *= ramp(start_step)
    log = open(run / "log.jsonl", "a")
    t_start = time.time() - elapsed_before
    losses = []
    t_session = time.time()
    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, desc="train")
    for s in bar:
        progress = 1.0 if finetune else s / total_steps
        losses.append(step([sampler.draw(progress, args.window_share) for _ in range(args.batch)]))
        sched.step()
        if s + 1 < ramp_until:
            for g in opt.param_groups:
                g["lr"] *= ramp(s + 1)
        update_ema(progress)
        if (s + 1) % args.eval_every == 0 or s + 1 == total_steps:
            c_raw, w_raw, examples = evaluate(net, manifest, arrays, mean, std, device)
            c, w = c_raw, w_raw
            if ema is not None:
                c, w, examples = evaluate(ema, manifest, arrays, mean, std, device)
            alt_scores, score = {}, w
            if alt_arrays is not None:
                c_alt, w_alt, _ = evaluate(ema if ema is not None else net, manifest, alt_arrays, mean, std, device)
                alt_scores = {"val_cer_alt": round(c_alt, 4), "val_wer_alt": round(w_alt, 4)}
                # Selected on both crop kinds: serving may use either.
                score = (w + w_alt) / 2
            elapsed = time.time() - t_start
            rec = {
                "step": s + 1,
                "minutes": round(elapsed / 60, 2),
                "samples": (s + 1) * args.batch,
                "loss": round(float(np.mean(losses)), 4),
                "lr": opt.param_groups[0]["lr"],
                "val_cer": round(c, 4),
                "val_wer": round(w, 4),
                "val_cer_last_weights": round(c_raw, 4),
                "val_wer_last_weights": round(w_raw, 4),
                **alt_scores,
            }
            losses = []
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=rec["loss"], cer=rec["val_cer"], wer=rec["val_wer"])
            tqdm.write(f"{json.dumps(rec)} e.g. {examples[0][0]!r} for {examples[0][1]!r}")
            ckpt = {
                "model": on_cpu(net.state_dict()),
                "ema": on_cpu(ema.state_dict()) if ema is not None else None,
                "inter_head": on_cpu(inter.head.state_dict()) if inter is not None else None,
                "word_head": on_cpu(words_net.head.state_dict()) if words_net is not None else None,
                "opt": on_cpu(opt.state_dict()),
                "sched": sched.state_dict(),
                "step": s + 1,
                "total_steps": total_steps,
                "best_wer": min(best_wer, score),
                "elapsed": elapsed,
                "mean": mean,
                "std": std,
                "val_cer": c,
                "val_wer": w,
                "data_manifest_sha256": manifest["manifest_sha256"],
                # How the crops reached the machine that trained (`carry`: a
                # lossy H.264 copy, its error measured), when not as built.
                "data_carried": summary(manifest.get("carried")),
                "alt_data_manifest_sha256": alt_manifest["manifest_sha256"] if alt_arrays is not None else None,
                "init": args.init,
                "recipe": {k: v for k, v in vars(args).items() if k not in ("data", "run", "resume")},
                "rng": {"sampler": sampler.rng.getstate(), "batch": rng.getstate(), "torch": torch.get_rng_state()},
            }
            torch.save(ckpt, run / "last.pt")
            if score <= best_wer:
                best_wer = score
                torch.save(ckpt, run / "best.pt")
            if args.session_minutes and time.time() - t_session > args.session_minutes * 60:
                print(f"stopping at step {s + 1} of {total_steps} (--session-minutes); resume with --resume {run / 'last.pt'}", flush=True)
                return
    print(f"done: best validation WER {best_wer:.4f}", flush=True)


if __name__ == "__main__":
    main()
