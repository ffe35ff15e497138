"""Deep Transfer Hashing (METHOD.md section 2): a CNN teacher and a distilled, ternary MLP student.

Both map 28x28 images (uint8 0..255 or float32, shape (n, 28, 28) or (n, 784)) to ``nbits`` hash
logits u; code bit j = (u_j > 0), packed LSB-first like faiss binary codes (byte j // 8, bit j % 8).

Loss (DSH, Liu et al. 2016), per batch of B images, for every bit prefix k in ``prefixes``:

    L_k = 1/k * [ mean_{i != j} ( 1/2 s_ij D_ij + 1/2 (1 - s_ij) max(2k - D_ij, 0) )
                  + alpha * 2 * mean_i || |u_i[:k]| - 1 ||_1 ]
    D_ij = ||u_i[:k] - u_j[:k]||^2,  s_ij = 1 when y_i == y_j (similar pair), margin m = 2k.

The loss is the mean of L_k over the prefixes, so bits [0, 16) alone are trained as a 16-bit code,
[0, 32) as a 32-bit one, etc.: one model serves every prefix length (the 1/k keeps the prefixes on
one scale; the regulariser term is the per-pair DSH one, each image appearing in 2 (B-1) pairs).

HashTeacher   conv3x3(1->16)-ReLU-maxpool2 -> conv3x3(16->32)-ReLU-maxpool2 -> fc(1568->256)-ReLU
              -> fc(256->nbits) hash layer, plus a fc(256->10) classification head trained with
              cross entropy (the seed's teacher: cross entropy + hashing loss).  ~0.45 M parameters;
              one Fashion-MNIST epoch takes ~20-25 s on one core.
HashStudent   MLP 784 -> hidden[0] -> hidden[1] -> nbits (default 512, 256): Linear -> BatchNorm ->
              ReLU per hidden layer, plain Linear hash layer.  ``ternary=True`` applies trained
              ternary quantization (TTQ, Zhu et al. 2017) to EVERY Linear layer:
                 delta = t * max|w| (w the layer's latent float weights),
                 w_t = +Wp where w > delta, -Wn where w < -delta, 0 elsewhere (Wp, Wn learned per layer),
              forward with w_t (after ``float_epochs`` float warm-up epochs on the latent weights: TTQ
              fine-tunes a trained float model); backward (straight-through, as in the TTQ paper):
                 dL/dw = Wp * dL/dw_t (positive region), 1 * dL/dw_t (zero region), Wn * dL/dw_t
                 (negative region); dL/dWp = sum over the positive region of dL/dw_t, and
                 dL/dWn = -sum over the negative region of dL/dw_t (the exact derivative of
                 w_t = -Wn there; the paper writes the sum for the magnitude).
              ``fit`` trains with the DSH loss only; ``distill(teacher, ...)`` adds
              kd_weight * mean (u_student - u_teacher[:, :nbits])^2 (the teacher's pre-sign hash
              outputs, precomputed once in eval mode).
              Options: ``views`` > 1 trains on the images plus views - 1 augmented copies
              (``augmented_views``: shifts of up to ``max_shift`` pixels, left-right flips), one copy
              per image drawn at random each epoch; ``distill`` has the teacher label every copy, ``fit``
              sees the same copies (a fair no-teacher baseline).  ``class_kd_weight`` > 0 adds
              T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) to the teacher's class logits z_t through a
              training-only float class head z_s on the last hidden layer (not exported);
              ``cls_weight`` > 0 adds that head's cross entropy with the labels (with or without a teacher).
              ``export_spec()`` gives the TERNARY_ENCODER_SPEC version-1 dict (BatchNorm folded
              into per-output scale/shift); ``export()`` wraps it in drqindex.encoder.TernaryEncoder.

Inputs are standardised inside the models: x' = x * in_scale + in_shift with a single scalar mean
and standard deviation of the training pixels (in_scale = 1 / std, in_shift = -mean / std, on raw
0..255 values), i.e. exactly the spec's preprocessing.

Determinism: torch.manual_seed(seed) for the initial weights, a seeded torch.Generator for the batch
order; training runs with ``num_threads`` torch threads (default: the current setting) restored
afterwards.  The same seed and thread count give identical weights (tested with one thread).
"""
from __future__ import annotations

import math
import numbers
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HashTeacher", "HashStudent", "dsh_loss", "TernaryLinear", "pack_bits", "augment_images", "augmented_views"]

_NUM_CLASSES_MAX = 1 << 16


# --------------------------------------------------------------------------- helpers
def pack_bits(logits: np.ndarray, nbits: Optional[int] = None) -> np.ndarray:
    """(n, >= nbits) float logits -> uint8 (n, nbits / 8) codes: bit j = logit_j > 0, LSB-first."""
    logits = np.asarray(logits)
    nbits = logits.shape[1] if nbits is None else int(nbits)
    bits = logits[:, :nbits] > 0
    return np.packbits(bits, axis=1, bitorder="little")


def _check_int(value, name, lo, hi=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected {rng}, got {value}")
    return value


def _check_float(value, name, lo=0.0, lo_open=True, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name}: expected a finite number, got {type(value).__name__} {value!r}")
    value = float(value)
    if value < lo or (lo_open and value == lo):
        raise ValueError(f"{name}: expected a value {'>' if lo_open else '>='} {lo}, got {value}")
    return value


def _check_prefixes(prefixes, nbits):
    if isinstance(prefixes, (int, np.integer)):
        prefixes = (prefixes,)
    try:
        p = tuple(sorted({int(k) for k in prefixes}))
    except TypeError as e:
        raise TypeError(f"prefixes: expected a sequence of ints, got {prefixes!r}") from e
    if not p or p[0] < 1 or p[-1] > nbits:
        raise ValueError(f"prefixes: expected bit counts in 1..nbits = {nbits}, got {prefixes!r}")
    return p


def dsh_loss(u: torch.Tensor, y: torch.Tensor, prefixes: Sequence[int], alpha: float) -> torch.Tensor:
    """DSH pairwise loss averaged over bit prefixes (module docstring).  u: (B, nbits), y: (B,) int64."""
    B = u.shape[0]
    if B < 2:
        return u.sum() * 0.0
    same = (y[:, None] == y[None, :]).to(u.dtype)
    off = 1.0 - torch.eye(B, dtype=u.dtype, device=u.device)
    n_pairs = B * (B - 1)
    sq = u * u
    total = u.new_zeros(())
    for k in prefixes:
        uk = u[:, :k]
        nk = sq[:, :k].sum(1)
        D = (nk[:, None] + nk[None, :] - 2.0 * (uk @ uk.T)).clamp_min(0.0)
        pair = 0.5 * same * D + 0.5 * (1.0 - same) * F.relu(2.0 * k - D)
        pair = (pair * off).sum() / n_pairs
        reg = 2.0 * alpha * (uk.abs() - 1.0).abs().sum(1).mean()
        total = total + (pair + reg) / k
    return total / len(prefixes)


def augment_images(x: np.ndarray, input_shape=(28, 28), max_shift: int = 2, flip: bool = True,
                   seed: int = 0) -> np.ndarray:
    """Randomly shifted (and flipped) copies of images: float32 (n, h * w) -> float32 (n, h * w).

    Each image moves by dy, dx drawn uniformly from -max_shift..max_shift (pixels shifted in are 0,
    the Fashion-MNIST background) and, with flip, is mirrored left-right with probability 1/2.
    Deterministic for a given seed (numpy default_rng)."""
    h, w = (int(v) for v in input_shape)
    x = np.asarray(x, dtype=np.float32).reshape(-1, h, w)
    n, s = x.shape[0], int(max_shift)
    rng = np.random.default_rng(seed)
    dy = rng.integers(-s, s + 1, n)
    dx = rng.integers(-s, s + 1, n)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    padded = np.zeros((n, h + 2 * s, w + 2 * s), dtype=np.float32)
    padded[:, s:s + h, s:s + w] = np.where(mirror[:, None, None], x[:, :, ::-1], x)
    out = np.empty_like(x)
    for oy in range(-s, s + 1):  # one slice per offset pair: (2 s + 1)^2 vectorised copies
        for ox in range(-s, s + 1):
            sel = np.flatnonzero((dy == oy) & (dx == ox))
            if sel.size:
                # the image moves by (oy, ox): output pixel (r, c) reads input pixel (r - oy, c - ox)
                out[sel] = padded[sel, s - oy:s - oy + h, s - ox:s - ox + w]
    return out.reshape(n, h * w)


def augmented_views(x: np.ndarray, views: int, input_shape=(28, 28), max_shift: int = 2, flip: bool = True,
                    seed: int = 0) -> np.ndarray:
    """float32 (views * n, h * w): the images themselves, then views - 1 augmented copies (augment_images
    with seeds seed, seed + 1, ...); row v * n + i is view v of image i."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [x] + [augment_images(x, input_shape, max_shift, flip, seed + v) for v in range(views - 1)]
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- TTQ
class _TTQFunction(torch.autograd.Function):
    """w_t = Wp [w > d] - Wn [w < -d]; straight-through gradients of the TTQ paper (module docstring)."""

    @staticmethod
    def forward(ctx, w, wp, wn, delta):
        pos = w > delta
        neg = w < -delta
        ctx.save_for_backward(pos, neg, wp, wn)
        return wp * pos.to(w.dtype) - wn * neg.to(w.dtype)

    @staticmethod
    def backward(ctx, g):
        pos, neg, wp, wn = ctx.saved_tensors
        posf, negf = pos.to(g.dtype), neg.to(g.dtype)
        scale = wp * posf + wn * negf + (1.0 - posf - negf)
        return g * scale, (g * posf).sum().reshape(wp.shape), -(g * negf).sum().reshape(wn.shape), None


class TernaryLinear(nn.Module):
    """A Linear layer whose forward weight is ternary {-Wn, 0, +Wp} (TTQ); latent float weights learn."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True, t: float = 0.05):
        super().__init__()
        self.t = float(t)
        lin = nn.Linear(d_in, d_out, bias=bias)
        self.weight = lin.weight
        self.bias = lin.bias
        w = self.weight.detach()
        delta = self.t * w.abs().max()
        big = w.abs() > delta
        init = w.abs()[big].mean() if bool(big.any()) else w.abs().mean()
        # Wp = Wn = the mean magnitude of the non-zero region: the ternary layer starts at the float
        # layer's scale, so the activations' statistics do not jump at the first step.
        self.wp = nn.Parameter(init.clone().reshape(()))
        self.wn = nn.Parameter(init.clone().reshape(()))

    quantize = True  # False: a plain float layer on the latent weights (the float warm-up epochs)

    @torch.no_grad()
    def reset_scales(self):
        """Wp = Wn = mean |w| over the non-zero region of the current latent weights (start of TTQ)."""
        w = self.weight.abs()
        big = w > self.delta()
        init = w[big].mean() if bool(big.any()) else w.mean()
        self.wp.fill_(float(init))
        self.wn.fill_(float(init))

    def delta(self) -> torch.Tensor:
        return self.t * self.weight.detach().abs().max()

    def ternary_weight(self) -> torch.Tensor:
        return _TTQFunction.apply(self.weight, self.wp, self.wn, self.delta())

    def masks(self):
        """(pos, neg) bool numpy (d_out, d_in) masks of the current ternary weight."""
        w = self.weight.detach()
        d = self.delta()
        return (w > d).cpu().numpy(), (w < -d).cpu().numpy()

    def forward(self, x):
        return F.linear(x, self.ternary_weight() if self.quantize else self.weight, self.bias)


# --------------------------------------------------------------------------- networks
class _Standardize(nn.Module):
    def __init__(self, d_in: int):
        super().__init__()
        self.register_buffer("in_scale", torch.ones(d_in))
        self.register_buffer("in_shift", torch.zeros(d_in))

    def forward(self, x):
        return x * self.in_scale + self.in_shift


class _TeacherNet(nn.Module):
    def __init__(self, input_shape, nbits, num_classes, c1=16, c2=32, fc=256):
        super().__init__()
        h, w = input_shape
        self.input_shape = input_shape
        self.std = _Standardize(h * w)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), fc), nn.ReLU())
        self.hash = nn.Linear(fc, nbits)
        self.cls = nn.Linear(fc, num_classes)

    def forward(self, x, with_class: bool = False):
        x = self.std(x).reshape(-1, 1, *self.input_shape)
        f = self.features(x)
        u = self.hash(f)
        return (u, self.cls(f)) if with_class else u


class _StudentNet(nn.Module):
    def __init__(self, d_in, hidden, nbits, ternary, t, num_classes=0):
        super().__init__()
        self.std = _Standardize(d_in)
        dims = [d_in, *hidden]
        self.fcs = nn.ModuleList()
        self.bns = nn.ModuleList()
        def make(a, b, bias):
            return TernaryLinear(a, b, bias, t) if ternary else nn.Linear(a, b, bias)
        for a, b in zip(dims[:-1], dims[1:]):
            self.fcs.append(make(a, b, False))  # a BatchNorm follows: a bias would be redundant
            self.bns.append(nn.BatchNorm1d(b))
        self.fcs.append(make(dims[-1], nbits, True))
        # training-only float class head on the last hidden layer (not exported: codes do not use it)
        self.cls = nn.Linear(dims[-1], num_classes) if num_classes else None

    def forward(self, x, with_class: bool = False):
        x = self.std(x)
        for fc, bn in zip(self.fcs[:-1], self.bns):
            x = F.relu(bn(fc(x)))
        u = self.fcs[-1](x)
        return (u, self.cls(x)) if with_class else u


# --------------------------------------------------------------------------- shared trainer
class _HashModel:
    """Input checks, the training loop, embed/encode; subclasses build the network."""

    _kind = "model"

    def __init__(self, nbits, prefixes, epochs, batch_size, lr, lr_final, alpha, seed, max_seconds,
                 num_threads, verbose, input_shape):
        self.nbits = _check_int(nbits, "nbits", 8, 4096)
        if self.nbits % 8:
            raise ValueError(f"nbits: expected a multiple of 8 (codes are whole bytes), got {self.nbits}")
        self.prefixes = _check_prefixes(self.nbits if prefixes is None else prefixes, self.nbits)
        self.epochs = _check_int(epochs, "epochs", 0)
        self.batch_size = _check_int(batch_size, "batch_size", 2)
        self.lr = _check_float(lr, "lr")
        self.lr_final = _check_float(lr_final, "lr_final", allow_none=True)
        self.alpha = _check_float(alpha, "alpha", lo_open=False)
        self.seed = _check_int(seed, "seed", 0)
        self.max_seconds = _check_float(max_seconds, "max_seconds", allow_none=True)
        self.num_threads = None if num_threads is None else _check_int(num_threads, "num_threads", 1)
        self.verbose = bool(verbose)
        try:
            shape = tuple(int(s) for s in input_shape)
        except TypeError as e:
            raise TypeError(f"input_shape: expected a tuple of ints, got {input_shape!r}") from e
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"input_shape: expected (height, width), got {input_shape!r}")
        self.input_shape = shape
        self.d_in = shape[0] * shape[1]
        self.net: Optional[nn.Module] = None
        self.history_: list[dict] = []
        self.train_seconds_: float = float("nan")
        self.stop_reason_: str = ""

    # ---- input checks
    def _check_x(self, x, name="x") -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy uint8 or float32 array of shape (n, {self.input_shape[0]}, "
                            f"{self.input_shape[1]}) or (n, {self.d_in}), got {type(x).__name__}")
        if x.dtype not in (np.uint8, np.float32):
            raise TypeError(f"{name}: expected dtype uint8 or float32, got {x.shape} {x.dtype}")
        if not ((x.ndim == 3 and x.shape[1:] == self.input_shape) or (x.ndim == 2 and x.shape[1] == self.d_in)):
            raise ValueError(f"{name}: expected shape (n, {self.input_shape[0]}, {self.input_shape[1]}) or "
                             f"(n, {self.d_in}), got {x.shape} {x.dtype}")
        x = np.ascontiguousarray(x.reshape(x.shape[0], self.d_in), dtype=np.float32)
        if x.size and not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"{name}: expected finite values, got {x[bad[0], bad[1]]} at row {bad[0]}, "
                             f"column {bad[1]}")
        return x

    def _check_y(self, y, n) -> np.ndarray:
        if not isinstance(y, np.ndarray):
            raise TypeError(f"y: expected a numpy integer array of shape ({n},), got {type(y).__name__}")
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"y: expected shape ({n},) (one label per image), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"y: expected integer class labels, got dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= _NUM_CLASSES_MAX):
            raise ValueError(f"y: expected labels in 0..{_NUM_CLASSES_MAX - 1}, got {y.min()}..{y.max()}")
        return y.astype(np.int64)

    def _require_trained(self, what="this model"):
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} is not trained: call fit() first")

    # ---- training
    def _build(self, num_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_standardization(self, x: np.ndarray):
        mean = float(x.mean(dtype=np.float64))
        std = float(x.std(dtype=np.float64)) or 1.0
        self.net.std.in_scale.fill_(1.0 / std)
        self.net.std.in_shift.fill_(-mean / std)

    def _on_epoch_start(self, net, epoch: int) -> None:
        pass

    def _loss(self, out, yb, idx, targets):  # pragma: no cover - abstract
        raise NotImplementedError

    def _train(self, x, y, targets=None, views: int = 1):
        # x (views * n, d): view v of image i is row v * n + i (view 0 = the images themselves); each
        # epoch visits every image once, through one view drawn at random per image and epoch.
        n = x.shape[0] // views
        if n < 2:
            raise ValueError(f"x: expected at least 2 training images (the loss is pairwise), got {n}")
        old_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        t0 = time.perf_counter()
        try:
            torch.manual_seed(self.seed)
            num_classes = int(y.max()) + 1
            self.net = None
            net = self._build(num_classes)
            self.net = net
            with torch.no_grad():
                self._set_standardization(x[:n])
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            gamma = 1.0 if self.lr_final is None or self.epochs <= 1 else \
                (self.lr_final / self.lr) ** (1.0 / (self.epochs - 1))
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
            gen = torch.Generator().manual_seed(self.seed)
            xt = torch.from_numpy(x)
            yt = torch.from_numpy(y)
            tt = None if targets is None else torch.from_numpy(targets)
            self.history_ = []
            self.stop_reason_ = "epochs"
            epochs = range(self.epochs)
            bar = None
            if self.verbose:
                try:
                    from tqdm.auto import tqdm
                    bar = tqdm(epochs, desc=type(self).__name__, leave=False)
                    epochs = bar
                except ImportError:
                    pass
            nb = max(1, n // self.batch_size)  # drop the ragged last batch: BatchNorm needs > 1 sample
            for epoch in epochs:
                self._on_epoch_start(net, epoch)
                net.train()
                perm = torch.randperm(n, generator=gen)
                total, parts = 0.0, {}
                done = 0
                for b in range(nb):
                    idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
                    rows = idx
                    if views > 1:
                        rows = idx + n * torch.randint(0, views, (idx.shape[0],), generator=gen)
                    loss, terms = self._loss(net, xt[rows], yt[idx], None if tt is None else tt[rows])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    for k, v in terms.items():
                        parts[k] = parts.get(k, 0.0) + v
                    done += 1
                    if self.max_seconds is not None and time.perf_counter() - t0 > self.max_seconds:
                        self.stop_reason_ = "max_seconds"
                        break
                sched.step()
                rec = {"epoch": epoch, "loss": total / done, **{k: v / done for k, v in parts.items()},
                       "seconds": time.perf_counter() - t0}
                self.history_.append(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                if self.stop_reason_ == "max_seconds":
                    break
            net.eval()
        finally:
            torch.set_num_threads(old_threads)
            self.train_seconds_ = time.perf_counter() - t0
        return self

    # ---- inference
    def embed(self, x, batch_size: int = 4096) -> np.ndarray:
        """float32 (n, nbits) hash logits (eval mode: BatchNorm uses its running statistics)."""
        self._require_trained()
        x = self._check_x(x)
        self.net.eval()
        out = np.empty((x.shape[0], self.nbits), dtype=np.float32)
        old = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                for s in range(0, x.shape[0], batch_size):
                    out[s:s + batch_size] = self.net(torch.from_numpy(x[s:s + batch_size])).numpy()
        finally:
            torch.set_num_threads(old)
        return out

    def encode(self, x, nbits: Optional[int] = None) -> np.ndarray:
        """uint8 (n, nbits / 8) codes, bit j = (logit_j > 0), LSB-first (faiss binary-code layout).

        nbits (default all) selects a prefix: the first nbits / 8 bytes of the full code."""
        self._require_trained()
        nb = self.nbits if nbits is None else _check_int(nbits, "nbits", 8, self.nbits)
        if nb % 8:
            raise ValueError(f"nbits: expected a multiple of 8, got {nb}")
        return pack_bits(self.embed(x), nb)

    def num_parameters(self) -> int:
        """Trainable parameters of the torch model (the teacher's classification head included)."""
        self._require_trained()
        return int(sum(p.numel() for p in self.net.parameters()))


class HashTeacher(_HashModel):
    """CNN hash teacher: conv16-conv32-fc256-fc<nbits> (+ fc10 class head), DSH over bit prefixes + CE.

    fit(x, y): x uint8/float32 (n, 28, 28) or (n, 784) raw pixels, y int (n,) labels.
    embed(x) -> float32 (n, nbits) logits; encode(x, nbits=None) -> uint8 (n, nbits / 8).
    Defaults: 12 epochs, batches of 256, Adam lr 3e-3 decayed geometrically to 1e-4, alpha = 0.01,
    ce_weight = 1 (measured on Fashion-MNIST: 8 epochs at lr 2e-3 gave mAP 86.2 at 64 bits, 14 epochs at
    3e-3 gave 89.8, first 2000 test queries; ~25 s per epoch on one core).
    """

    _kind = "teacher"

    def __init__(self, nbits: int = 64, prefixes: Optional[Sequence[int]] = (16, 32, 48, 64), epochs: int = 12,
                 batch_size: int = 256, lr: float = 3e-3, lr_final: Optional[float] = 1e-4, alpha: float = 0.01,
                 ce_weight: float = 1.0, channels: tuple = (16, 32), fc: int = 256, seed: int = 0,
                 max_seconds: Optional[float] = None, num_threads: Optional[int] = None, verbose: bool = False,
                 input_shape: tuple = (28, 28)):
        super().__init__(nbits, prefixes, epochs, batch_size, lr, lr_final, alpha, seed, max_seconds, num_threads,
                         verbose, input_shape)
        self.ce_weight = _check_float(ce_weight, "ce_weight", lo_open=False)
        self.channels = (_check_int(channels[0], "channels[0]", 1), _check_int(channels[1], "channels[1]", 1))
        self.fc = _check_int(fc, "fc", 1)
        if self.input_shape[0] % 4 or self.input_shape[1] % 4:
            raise ValueError(f"input_shape: the two 2x2 poolings need sides divisible by 4, got {self.input_shape}")

    def _build(self, num_classes):
        return _TeacherNet(self.input_shape, self.nbits, max(num_classes, 2), *self.channels, self.fc)

    def _loss(self, net, xb, yb, targets):
        u, logits = net(xb, with_class=True)
        h = dsh_loss(u, yb, self.prefixes, self.alpha)
        ce = F.cross_entropy(logits, yb) if self.ce_weight > 0 else u.new_zeros(())
        return h + self.ce_weight * ce, {"dsh": float(h.detach()), "ce": float(ce.detach())}

    def fit(self, x, y) -> "HashTeacher":
        x = self._check_x(x, "x")
        y = self._check_y(y, x.shape[0])
        return self._train(x, y)

    def embed_with_class(self, x, batch_size: int = 4096):
        """(float32 (n, nbits) hash logits, float32 (n, num_classes) class logits), eval mode."""
        self._require_trained()
        x = self._check_x(x)
        self.net.eval()
        us, cs = [], []
        old = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                for s in range(0, x.shape[0], batch_size):
                    u, c = self.net(torch.from_numpy(x[s:s + batch_size]), with_class=True)
                    us.append(u.numpy())
                    cs.append(c.numpy())
        finally:
            torch.set_num_threads(old)
        return np.concatenate(us).astype(np.float32), np.concatenate(cs).astype(np.float32)

    def fc_size_bytes(self) -> int:
        """Bytes of the FC layers (fc256 and the hash layer) in float32: 4 B per weight and bias."""
        self._require_trained()
        fc = [self.net.features[-2], self.net.hash]
        return int(sum(4 * (m.weight.numel() + m.bias.numel()) for m in fc))

    def export(self):
        raise NotImplementedError("HashTeacher is a CNN: the ternary-encoder spec holds FC layers only; "
                                  "export a HashStudent distilled from it")


class HashStudent(_HashModel):
    """MLP hash student (784 -> 512 -> 256 -> nbits by default), optionally ternary (TTQ on every FC layer).

    fit(x, y): DSH over bit prefixes only.  distill(teacher, x, y): DSH + kd_weight * MSE(u_s, u_t).
    Defaults: 12 epochs, batches of 256, Adam lr 1e-3 decayed geometrically to 1e-4, alpha = 0.01,
    t = 0.05, kd_weight = 0.1, no augmentation (views = 1), no class head; a ternary student trains its
    first float_epochs (default epochs // 2) as a float network, then with TTQ.
    Measured on Fashion-MNIST (60k database = training images, 10k queries, one thread, one teacher with
    mAP 88.4 at 64 bits; /work/scratch/hashtrain/log.md of the tuning run): decaying to 1e-4 instead of
    1e-5 gave the ternary 784-512-256 student +0.6 mAP at 64 bits (the TTQ half of the run had too small
    a learning rate), hidden (1024, 512) another +1.0 (benchmarks/bench_hashing.py uses it); a smaller
    kd_weight was better at every length (ternary 784-1024-512-64, mAP at 16 / 32 / 48 / 64 bits:
    kd_weight 1.0: 85.2 / 85.8 / 86.1 / 86.3, 0.3: 85.9 / 86.4 / 86.7 / 86.9, 0.1: 86.6 / 87.1 / 87.3 /
    87.4, ~170 s each).  Augmented views (2 or 8 per image) and class-probability KD (T = 4) lowered mAP
    there (the database is the training set).
    """

    _kind = "student"

    def __init__(self, nbits: int = 64, hidden: Sequence[int] = (512, 256), ternary: bool = True,
                 prefixes: Optional[Sequence[int]] = (16, 32, 48, 64), t: float = 0.05, kd_weight: float = 0.1,
                 epochs: int = 12, batch_size: int = 256, lr: float = 1e-3, lr_final: Optional[float] = 1e-4,
                 alpha: float = 0.01, float_epochs: Optional[int] = None, views: int = 1, max_shift: int = 2,
                 flip: bool = True, class_kd_weight: float = 0.0, temperature: float = 4.0, cls_weight: float = 0.0,
                 seed: int = 0, max_seconds: Optional[float] = None, num_threads: Optional[int] = None,
                 verbose: bool = False, input_shape: tuple = (28, 28)):
        super().__init__(nbits, prefixes, epochs, batch_size, lr, lr_final, alpha, seed, max_seconds, num_threads,
                         verbose, input_shape)
        # views > 1: the training images plus views - 1 augmented copies (augmented_views: shifts of up to
        # max_shift pixels, left-right flips); distill() has the teacher label every copy
        self.views = _check_int(views, "views", 1, 64)
        self.max_shift = _check_int(max_shift, "max_shift", 0, min(self.input_shape) - 1)
        self.flip = bool(flip)
        # class_kd_weight > 0: distill() also matches the teacher's class probabilities at this temperature
        # (Hinton et al. 2015: T^2 * KL(p_teacher^T || p_student^T)) through a training-only class head;
        # cls_weight > 0: cross entropy of that head with the labels (both need the head)
        self.class_kd_weight = _check_float(class_kd_weight, "class_kd_weight", lo_open=False)
        self.temperature = _check_float(temperature, "temperature")
        self.cls_weight = _check_float(cls_weight, "cls_weight", lo_open=False)
        self._num_classes = 0
        # ternary students: the first float_epochs epochs train the latent weights as a float network
        # (TTQ fine-tunes a trained full-precision model, as in the TTQ paper); None: epochs // 2
        self.float_epochs = self.epochs // 2 if float_epochs is None else _check_int(float_epochs, "float_epochs", 0)
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        self.hidden = tuple(_check_int(h, "hidden", 1) for h in hidden)
        self.ternary = bool(ternary)
        self.t = _check_float(t, "t", lo_open=False)
        if self.t >= 1:
            raise ValueError(f"t: expected 0 <= t < 1 (threshold = t * max|w|), got {self.t}")
        self.kd_weight = _check_float(kd_weight, "kd_weight", lo_open=False)
        self.distilled_ = False

    def _on_epoch_start(self, net, epoch):
        if not self.ternary:
            return
        quantize = epoch >= self.float_epochs
        for m in net.fcs:
            if quantize and not m.quantize:
                m.reset_scales()  # Wp, Wn from the warmed-up latent weights
            m.quantize = quantize

    def _train(self, x, y, targets=None, views: int = 1):
        super()._train(x, y, targets, views)
        if self.ternary:  # stopped (epochs or max_seconds) inside the warm-up: the model must still be ternary
            for m in self.net.fcs:
                if not m.quantize:
                    m.reset_scales()
                    m.quantize = True
        return self

    def _build(self, num_classes):
        head = max(num_classes, self._num_classes, 2) if (self.class_kd_weight > 0 or self.cls_weight > 0) else 0
        net = _StudentNet(self.d_in, self.hidden, self.nbits, self.ternary, self.t, head)
        if self.ternary:
            for m in net.fcs:
                m.quantize = self.float_epochs == 0
        return net

    def _loss(self, net, xb, yb, targets):
        if net.cls is None:
            u, logits = net(xb), None
        else:
            u, logits = net(xb, with_class=True)
        h = dsh_loss(u, yb, self.prefixes, self.alpha)
        loss, terms = h, {"dsh": float(h.detach())}
        if logits is not None and self.cls_weight > 0:
            ce = F.cross_entropy(logits, yb)
            loss, terms["ce"] = loss + self.cls_weight * ce, float(ce.detach())
        if targets is None:
            return loss, terms
        kd = F.mse_loss(u, targets[:, :self.nbits])
        loss, terms["kd"] = loss + self.kd_weight * kd, float(kd.detach())
        if logits is not None and self.class_kd_weight > 0:
            T = self.temperature
            p_t = F.log_softmax(targets[:, self.nbits:] / T, dim=1)
            ckd = F.kl_div(F.log_softmax(logits / T, dim=1), p_t, log_target=True, reduction="batchmean") * T * T
            loss, terms["class_kd"] = loss + self.class_kd_weight * ckd, float(ckd.detach())
        return loss, terms

    def _views_of(self, x):
        if self.views == 1:
            return x
        return augmented_views(x, self.views, self.input_shape, self.max_shift, self.flip, self.seed)

    def fit(self, x, y) -> "HashStudent":
        """Train with the DSH loss alone (no teacher), on the same augmented views as distill()."""
        x = self._check_x(x, "x")
        y = self._check_y(y, x.shape[0])
        self.distilled_ = False
        self._num_classes = int(y.max()) + 1 if y.size else 0
        return self._train(self._views_of(x), y, views=self.views)

    def distill(self, teacher, x, y) -> "HashStudent":
        """Train with DSH + kd_weight * mean squared difference to the teacher's hash logits on x.

        The teacher may have more bits than the student (a prefix-trained teacher): the student then
        matches the teacher's first nbits logits."""
        if not hasattr(teacher, "embed") or not hasattr(teacher, "nbits"):
            raise TypeError(f"teacher: expected a trained HashTeacher (or a model with embed() and nbits), "
                            f"got {type(teacher).__name__}")
        if getattr(teacher, "net", True) is None:
            raise RuntimeError(f"teacher {type(teacher).__name__} is not trained: call fit() first")
        if int(teacher.nbits) < self.nbits:
            raise ValueError(f"teacher: expected a teacher with nbits >= {self.nbits}, got {teacher.nbits}")
        x = self._check_x(x, "x")
        y = self._check_y(y, x.shape[0])
        if self.class_kd_weight > 0 and not hasattr(teacher, "embed_with_class"):
            raise TypeError(f"teacher: class_kd_weight > 0 needs a teacher with class logits (embed_with_class), "
                            f"got {type(teacher).__name__}")
        xv = self._views_of(x)  # the teacher labels every augmented copy: its function beyond the labels
        # a longer (prefix-trained) teacher: its first nbits logits are its nbits-bit code
        if self.class_kd_weight > 0:
            u, logits = teacher.embed_with_class(xv)
            targets = np.concatenate([u[:, :self.nbits], logits], axis=1)
            self._num_classes = logits.shape[1]
        else:
            targets = teacher.embed(xv)[:, :self.nbits]
            self._num_classes = int(y.max()) + 1 if y.size else 0
        targets = np.ascontiguousarray(targets, dtype=np.float32)
        self.distilled_ = True
        return self._train(xv, y, targets, views=self.views)

    # ---- sizes
    def _layer_shapes(self):
        dims = [self.d_in, *self.hidden, self.nbits]
        return list(zip(dims[1:], dims[:-1]))  # (d_out, d_in)

    def num_parameters(self) -> int:
        """Inference parameters: FC weights + per-output scale and shift (+ Wp, Wn per ternary layer)."""
        return int(sum(o * i + 2 * o + (2 if self.ternary else 0) for o, i in self._layer_shapes()))

    def fc_size_bytes(self, ternary: Optional[bool] = None) -> int:
        """Bytes of the FC layers at inference: ternary 2 bits per weight + 4 B per scalar (Wp, Wn, scale,
        shift); float 4 B per weight and scalar.  ternary=None: as this model is (ternary or not)."""
        tern = self.ternary if ternary is None else bool(ternary)
        total = 0
        for o, i in self._layer_shapes():
            total += (-(-2 * o * i // 8) + 4 * 2) if tern else 4 * o * i
            total += 4 * 2 * o
        return int(total)

    # ---- export
    def ternary_layers(self):
        """The TernaryLinear modules (ternary students only)."""
        self._require_trained()
        return [m for m in self.net.fcs if isinstance(m, TernaryLinear)]

    def export_spec(self) -> dict:
        """The TERNARY_ENCODER_SPEC version-1 dict: numpy arrays and python scalars (BatchNorm folded)."""
        self._require_trained()
        net = self.net
        layers = []
        with torch.no_grad():
            n_fc = len(net.fcs)
            for li, fc in enumerate(net.fcs):
                d_out = fc.weight.shape[0]
                bias = fc.bias.detach().double() if fc.bias is not None else torch.zeros(d_out, dtype=torch.float64)
                if li < n_fc - 1:
                    bn = net.bns[li]
                    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                    scale = s
                    shift = (bias - bn.running_mean.double()) * s + bn.bias.double()
                    relu = True
                else:
                    scale = torch.ones(d_out, dtype=torch.float64)
                    shift = bias
                    relu = False
                entry = {"scale": scale.float().numpy().copy(), "shift": shift.float().numpy().copy(), "relu": relu}
                if isinstance(fc, TernaryLinear):
                    wp, wn = float(fc.wp), float(fc.wn)
                    if wp < 0 or wn < 0:
                        raise RuntimeError(f"layer {li}: TTQ scalars must be >= 0 for export, got Wp={wp}, Wn={wn}")
                    pos, neg = fc.masks()
                    entry = {"kind": "ternary", "pos": pos, "neg": neg, "w_pos": wp, "w_neg": wn, **entry}
                else:
                    entry = {"kind": "float", "weight": fc.weight.detach().float().numpy().copy(), **entry}
                layers.append(entry)
            in_scale = net.std.in_scale.float().numpy().copy()
            in_shift = net.std.in_shift.float().numpy().copy()
        return {"version": 1, "input_shape": tuple(self.input_shape), "in_scale": in_scale, "in_shift": in_shift,
                "layers": layers}

    def export(self):
        """drqindex.encoder.TernaryEncoder.from_spec(self.export_spec()) (the C++ encoder, no torch)."""
        spec = self.export_spec()
        try:
            from drqindex.encoder import TernaryEncoder
        except ImportError as e:
            raise ImportError("HashStudent.export() needs drqindex.encoder.TernaryEncoder (the C++ ternary "
                              f"encoder), which is not available ({e}); export_spec() returns the plain dict") from e
        return TernaryEncoder.from_spec(spec)
