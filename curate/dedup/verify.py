"""Second stage of near-copy detection: is a candidate pair the same picture? Decided on the images.

Why: a global cosine cut cannot separate copies from look-alikes. Pooled ImageNet features move more
under JPEG q40 / 50% resize / 85% crop / a 5-degree turn (copy at cosine 0.75-0.95) than distinct
photos of one textile are from each other (~0.97). So the encoder only proposes candidates (each
image's nearest neighbours, curate.dedup.candidates) and this module checks each pair on pixels:

- images with enough texture (shorter side >= LOCAL_MIN_SIDE): ORB keypoints on a grayscale copy at
  WORK_SIDE, matched with Lowe's ratio test, a similarity transform (rotation, scale, shift) fitted by
  RANSAC; the pair is a copy when at least MIN_INLIERS matches agree with it AND the two images,
  aligned by it, correlate (NCC >= PHOTO_NCC over the overlap, which must cover >= MIN_OVERLAP of
  the smaller image). Keypoints alone are fooled by periodic textures (a weave matches itself
  shifted by a period); the correlation of the aligned images is not.
- tiny images (digits of 28 px, 14 px after a resize) have too few keypoints: both are resampled to
  a common small size (the smaller image's own resolution, at most TINY_SIDE, so a downscaled copy
  is compared at the detail it still has), then a small set of scales and rotations is searched with
  phase correlation for the shift, and the best aligned NCC must reach TINY_NCC.

Both checks are invariant to brightness / contrast (NCC) and to re-encoding noise. The thresholds
come from benchmarks/dedup.py (`quality`), where they separate planted copies from kNN look-alikes
on a mixed pool of textile photos and MNIST digits with a margin (see BENCHMARKS.md).
Each image is decoded once; only its signature is kept: at most N_FEATURES x 32 B of descriptors
plus 8 B per keypoint, a 64-px and a <= 64-px uint8 thumbnail: <= 24 KB, about 20 KB for a photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORK_SIDE = 256  # longest side the local-feature check works at
LOCAL_MIN_SIDE = 64  # shorter side below which an image gets the tiny check
N_FEATURES = 400
MIN_KEYPOINTS = 20
RATIO = 0.8  # Lowe's ratio test
MIN_INLIERS = 12
PHOTO_SIDE = 64  # side of the thumbnail the aligned correlation is measured on
PHOTO_NCC = 0.60
MIN_OVERLAP = 0.4
TINY_SIDE = 32
TINY_NCC = 0.98
TINY_SCALES = (0.85, 0.92, 1.0, 1.087, 1.176)
TINY_ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
THUMB_SIDE = 16  # the second candidate source: a 16 x 16 grayscale thumbnail, zero-mean, unit length


def _cv2():  # noqa: ANN202 - the cv2 module
    try:
        import cv2
    except ImportError:  # pragma: no cover - a core dependency; only a broken install gets here
        raise ValueError("verification needs OpenCV: pip install opencv-python-headless, or --verify off") from None
    cv2.setNumThreads(1)  # pairs are spread over threads already
    return cv2


@dataclass
class Signature:
    """What verification keeps of one decoded image."""

    size: tuple[int, int]  # (width, height) as decoded (EXIF applied)
    photo: np.ndarray  # uint8 grayscale, longest side PHOTO_SIDE, aspect kept
    tiny: np.ndarray  # uint8 grayscale, native size if small (else longest side 2 * TINY_SIDE)
    kp: np.ndarray | None = None  # [m, 2] float32 keypoints at WORK_SIDE scale
    desc: np.ndarray | None = None  # [m, 32] uint8 ORB descriptors

    @property
    def local(self) -> bool:
        return self.kp is not None and len(self.kp) >= MIN_KEYPOINTS


def _resize_longest(gray: np.ndarray, side: int) -> np.ndarray:
    cv2 = _cv2()
    h, w = gray.shape
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def signature(img) -> Signature:  # noqa: ANN001 - PIL image (RGB, EXIF applied)
    """The signature of one image (decoded as `curate embed` decodes it)."""
    cv2 = _cv2()
    gray = np.asarray(img.convert("L"))
    h, w = gray.shape
    photo = _resize_longest(gray, PHOTO_SIDE)
    tiny = gray if max(h, w) <= 2 * TINY_SIDE else _resize_longest(gray, 2 * TINY_SIDE)
    sig = Signature(size=(w, h), photo=photo, tiny=np.ascontiguousarray(tiny))
    if min(h, w) >= LOCAL_MIN_SIDE:
        work = _resize_longest(gray, WORK_SIDE)
        orb = cv2.ORB_create(nfeatures=N_FEATURES, fastThreshold=10)
        kps, desc = orb.detectAndCompute(work, None)
        if desc is not None and len(kps) >= MIN_KEYPOINTS:
            sig.kp = np.array([k.pt for k in kps], dtype=np.float32)
            sig.desc = desc
    return sig


def thumb_vector(sig: Signature | None) -> np.ndarray:
    """The image's THUMB_SIDE x THUMB_SIDE grayscale thumbnail (aspect ignored), centred and unit
    length, so brightness and contrast changes do not move it; zeros for an unreadable image.
    Re-encoding, resizing and small crops or turns barely move it, while pooled CNN features move a
    lot: it proposes the candidates the encoder's neighbours miss (see curate.dedup.candidates)."""
    out = np.zeros(THUMB_SIDE * THUMB_SIDE, dtype=np.float32)
    if sig is None:
        return out
    cv2 = _cv2()
    t = cv2.resize(sig.photo, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    norm = float(np.linalg.norm(t))
    return t / norm if norm > 1e-6 else out


@dataclass
class Verdict:
    same: bool
    method: str  # "local" (keypoints + RANSAC + aligned NCC) or "tiny" (registration + NCC)
    score: float  # aligned NCC
    inliers: int = 0


def verify_pair(a: Signature, b: Signature) -> Verdict:
    """Whether two signatures show the same picture (see the module docstring for the rule)."""
    if a.local and b.local:
        return _verify_local(a, b)
    # both ways: warping the image that shows more of the scene up loses detail (a crop is matched
    # best by shrinking it onto its original, a rotation by turning the original)
    score = max(tiny_score(a, b), tiny_score(b, a))
    return Verdict(same=score >= TINY_NCC, method="tiny", score=score)


def _verify_local(a: Signature, b: Signature) -> Verdict:
    cv2 = _cv2()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    knn = matcher.knnMatch(a.desc, b.desc, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < MIN_INLIERS:
        return Verdict(False, "local", 0.0, len(good))
    src = a.kp[[m.queryIdx for m in good]]
    dst = b.kp[[m.trainIdx for m in good]]
    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                          maxIters=1000, confidence=0.99)
    inliers = int(mask.sum()) if mask is not None else 0
    if m is None or inliers < MIN_INLIERS:
        return Verdict(False, "local", 0.0, inliers)
    ncc = _aligned_ncc(a, b, m)
    return Verdict(ncc >= PHOTO_NCC, "local", ncc, inliers)


def _aligned_ncc(a: Signature, b: Signature, m: np.ndarray) -> float:
    """NCC of a warped onto b with the transform m (found at WORK_SIDE scale), on the PHOTO_SIDE
    thumbnails; 0 when the overlap is too small."""
    cv2 = _cv2()
    sa = a.photo.shape[1] / max(1, _work_w(a))  # photo px per work px
    sb = b.photo.shape[1] / max(1, _work_w(b))
    # photo_a -> work_a -> (m) -> work_b -> photo_b
    m3 = np.vstack([m, [0, 0, 1]])
    t = np.diag([sb, sb, 1.0]) @ m3 @ np.diag([1 / sa, 1 / sa, 1.0])
    hb, wb = b.photo.shape
    pa = a.photo.astype(np.float32)
    warped = cv2.warpAffine(pa, t[:2], (wb, hb), flags=cv2.INTER_LINEAR, borderValue=-1.0)
    valid = cv2.warpAffine(np.ones_like(pa), t[:2], (wb, hb), flags=cv2.INTER_NEAREST, borderValue=0.0) > 0.5
    if valid.sum() < MIN_OVERLAP * min(a.photo.size, b.photo.size):
        return 0.0
    return _ncc(warped[valid], b.photo[valid])


def _work_w(s: Signature) -> int:
    w, h = s.size
    return max(1, round(w * WORK_SIDE / max(w, h)))


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 1e-9 else 0.0


def tiny_score(a: Signature, b: Signature) -> float:
    """Best NCC of a against b over TINY_SCALES x TINY_ANGLES, the shift from phase correlation (or
    none: at 14 px phase correlation can be off by a pixel). Both are compared square at the
    smaller one's resolution (at most TINY_SIDE), so a downscaled copy is compared at the detail it
    still has; the border that a warp uncovers is black (both digits and photos measured so)."""
    cv2 = _cv2()
    side = max(8, int(min(TINY_SIDE, *a.size, *b.size)))
    ta = cv2.resize(a.tiny, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    tb = cv2.resize(b.tiny, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    win = cv2.createHanningWindow((side, side), cv2.CV_32F)
    centre = ((side - 1) / 2, (side - 1) / 2)
    ncc_with_b = _ncc_against(tb)  # b's centring and norm once per pair, not once per warp (the hot loop)
    best = -1.0
    for s in TINY_SCALES:
        for ang in TINY_ANGLES:
            m = cv2.getRotationMatrix2D(centre, ang, s)
            unshifted = cv2.warpAffine(ta, m, (side, side), flags=cv2.INTER_LINEAR)
            # copies: OpenCV 5's phaseCorrelate applies the window to its inputs in place
            (dx, dy), _ = cv2.phaseCorrelate(unshifted.copy(), tb.copy(), win)
            mm = m.copy()
            mm[:, 2] += (dx, dy)
            best = max(best, ncc_with_b(cv2.warpAffine(ta, mm, (side, side), flags=cv2.INTER_LINEAR)),
                       ncc_with_b(unshifted))
    return best


def _ncc_against(y: np.ndarray):  # noqa: ANN202 - a closure: x -> NCC(x, y), as _ncc computes it
    yc = y.astype(np.float64).ravel()
    yc -= yc.mean()
    ny = float(np.sqrt(yc @ yc))

    def ncc(x: np.ndarray) -> float:
        xc = x.astype(np.float64).ravel()
        xc -= xc.mean()
        d = float(np.sqrt(xc @ xc)) * ny
        return float(xc @ yc / d) if d > 1e-9 else 0.0

    return ncc
