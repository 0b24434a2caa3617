"""Oracles for lost-cell fills at one vqgan setting on the dev photos, as `recovery_devcheck.py` scores them (20 % of the
packets lost independently, 2 draws each with `nmc eval --loss`'s seeds): what a lost cell would decode like if it were
filled otherwise. It replaces the codec's `conceal` for the run (monkeypatching: research only, not a codec path).

    python -P scripts/recovery_oracle.py SETTING G HOW        [REC=recovery file: its concealing decoder, if any, decodes]

HOW: truth (the true index: the loss-free decode), recovery (the codec's own fill), nearestcodes / meancodes (the
nearest copy / the neighbours' mean as code maps, so that a concealing decoder decodes them), and with G > 1 k-means
groups of the codebook's unit codes, each lost cell's group known (a redundant coarse copy that always arrived):
centroid (the group's centroid), snapmean / snapcont (the group's code nearest the neighbours' mean / the continuous
model's vector), constrained (an index model's argmax within the group); reencode / reencodehard (the neighbours' mean
decoded, encoded again by g_a and in_proj, and each lost cell given that unit latent / its nearest code), meannorm (the
neighbours' mean scaled to unit length, the length of a received code), meanscale (the mean times SCALE), harmonic
(Laplace inpainting: ITERS rounds of each lost cell taking the mean of its 8 neighbours' current codes, from the mean
fill), blend (ALPHA x the mean + (1 - ALPHA) x the nearest copy's code).
"""
import hashlib, io, os, sys
from pathlib import Path
import numpy as np, torch
from scipy.cluster.vq import kmeans2
from nmc.codec import api
from nmc.codec import loss as L
from nmc.codec.container import read_header
from nmc.codec.evaluate import Scorer, load_reference
import nmc.models.vqgan.codec as VC
from nmc.models.vqgan import recovery as R
from nmc.models.vqgan.tiling import net_indices

DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev" / "images"
if len(sys.argv) != 4:
    raise SystemExit(__doc__)
setting, G, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]  # how: centroid | snapmean | constrained | truth | recovery
codec = VC.VQGANCodec(recovery_path=Path(os.environ["REC"])) if os.environ.get("REC") else VC.VQGANCodec()
codec.recovery  # sets a concealing decoder, if the file has one
size = codec.setting(setting).codebook_size
k = codec.model.net.sizes.index(size)
codes = codec.model.net.unit_codes(size).float().cpu()
if G > 1:
    cent, group = kmeans2(codes.numpy().astype(np.float64), G, minit="++", seed=0, iter=50)
    group = torch.from_numpy(group)
    cent = torch.nn.functional.normalize(torch.from_numpy(cent).float(), dim=-1)
truth = {}  # "grid": the photo's true index map (the dev photos are one tile each: the codec's indices)

def conceal(indices, masked, k_):
    t = truth["grid"]
    g = group[torch.from_numpy(t)] if G > 1 else None  # [h, w] each cell's group
    if how == "truth":
        return t
    if how == "recovery":
        return orig_conceal(indices, masked, k_)
    if how == "nearestcodes":  # the nearest copy as a code map (so that a concealing decoder, if loaded, decodes it)
        return codes[torch.from_numpy(R.fill_nearest(indices, masked))].numpy()
    if how == "meancodes":
        return R.fill_mean(indices, masked, codes)
    if how == "meannorm":
        mean = torch.from_numpy(R.fill_mean(indices, masked, codes))
        return torch.where(torch.from_numpy(masked)[..., None], torch.nn.functional.normalize(mean, dim=-1), mean).numpy()
    if how == "harmonic":  # Laplace inpainting: the mean fill, then every lost cell the mean of all 8 neighbours' current codes
        c, m = torch.from_numpy(R.fill_mean(indices, masked, codes)), torch.from_numpy(masked)
        inside = R.neighbours(torch.ones_like(m)[None], False)[0][..., None]  # [h, w, 8, 1]
        for _ in range(int(os.environ.get("ITERS", "10"))):
            avg = (R.neighbours(c[None], 0.0)[0] * inside).sum(-2) / inside.sum(-2)
            c = torch.where(m[..., None], avg, c)
        return c.numpy()
    if how == "meanscale":  # the mean fill times SCALE at the lost cells
        mean, m = torch.from_numpy(R.fill_mean(indices, masked, codes)), torch.from_numpy(masked)[..., None]
        return torch.where(m, mean * float(os.environ["SCALE"]), mean).numpy()
    if how == "blend":  # ALPHA x the mean fill + (1 - ALPHA) x the nearest copy's code (sharper than the mean)
        mean, m = torch.from_numpy(R.fill_mean(indices, masked, codes)), torch.from_numpy(masked)[..., None]
        near, alpha = codes[torch.from_numpy(R.fill_nearest(indices, masked))], float(os.environ["ALPHA"])
        return torch.where(m, alpha * mean + (1 - alpha) * near, mean).numpy()
    if how in ("reencode", "reencodehard"):  # what the encoder makes of the decoded mean fill, at the lost cells only
        net, mean = codec.model.net, torch.from_numpy(R.fill_mean(indices, masked, codes))
        vq = net.parts(size)[0]
        with torch.inference_mode():
            x = net.synthesize(mean.permute(2, 0, 1)[None], size)  # in [0, 1]
            z = vq.latent(net.features(x))[0, :, : mean.shape[0], : mean.shape[1]]  # [d, h, w] unit
            z = codes[vq.codes_to_indices(z[None])[0]] if how == "reencodehard" else z.permute(1, 2, 0)
        return torch.where(torch.from_numpy(masked)[..., None], z, mean).numpy()
    if how == "centroid":
        out = codes[torch.from_numpy(np.where(masked, 0, indices))].numpy().copy()
        out[masked] = cent[g][torch.from_numpy(masked)].numpy()
        return out
    if how == "snapmean":  # neighbours' mean, then the nearest code of the cell's group
        mean = torch.from_numpy(R.fill_mean(indices, masked, codes))
        sims = mean @ codes.T  # [h, w, S]
        sims[group[None, None, :].expand_as(sims) != g[..., None]] = -9
        best = sims.argmax(-1).numpy()
        return np.where(masked, best, indices)
    if how in ("snapcont", "cont"):  # the continuous recovery model's vector, snapped to the nearest code of the cell's group
        model, covered = codec.recovery
        with torch.inference_mode():
            vec = torch.from_numpy(R.fill_codes(model, indices, masked, covered[size], codes))
        if how == "cont":
            return vec.numpy()
        sims = vec @ codes.T
        sims[group[None, None, :].expand_as(sims) != g[..., None]] = -9
        return np.where(masked, sims.argmax(-1).numpy(), indices)
    if how == "constrained":  # the recovery transformer's argmax within the group, one round
        model, covered = codec.recovery
        out = indices.copy()
        allowed = torch.zeros(t.shape + (size,), dtype=torch.bool)
        allowed[...] = group[None, None, :] == g[..., None]
        with torch.inference_mode():
            for (sy, sx), core in R.window_cores(indices.shape, model.args.max_side):
                m = masked[sy, sx]
                ys, xs = np.nonzero(m & core)
                if not len(ys): continue
                window, mask = (torch.from_numpy(np.ascontiguousarray(a))[None] for a in (out[sy, sx], m))
                feats = model.features(window, mask, covered[size])[0][torch.from_numpy(ys), torch.from_numpy(xs)]
                logits = model.logits(feats, covered[size]).float()
                a = allowed[sy.start + ys, sx.start + xs]
                logits[~a] = -1e9
                out[sy.start + ys, sx.start + xs] = logits.argmax(-1).numpy()
        return out
    raise SystemExit(how)

scores = []
for path in sorted(DEV.glob("*.png")):
    ref, sha = load_reference(path, "image"), hashlib.sha256(path.read_bytes()).hexdigest()
    scorer = Scorer("image", lambda: ref, ["st_lpips", "psnr"], "cpu")
    fo = io.BytesIO()
    api.compress_to_file(codec, ref, fo, codec.setting(setting))
    data = fo.getvalue()
    with torch.inference_mode():
        truth["grid"] = net_indices(codec.model.net, torch.from_numpy(ref.pixels[None]), (size,))[0][0].numpy()
    packets = read_header(io.BytesIO(data), api.header_dictionary).packets or 0
    for draw in range(2):
        lost = L.lost_packets(packets, 0.2, "independent", L.seed_of(0, sha, "independent", 0.2, draw))
        orig_conceal = VC.VQGANCodec.conceal.__get__(codec)
        codec.conceal = conceal
        s = scorer.scores([api.decompress(L.with_lost(data, lost, api.header_dictionary), recover=True, codec=codec)])[0]
        del codec.conceal
        scores.append((s["st_lpips"], s["psnr"]))
        print(f"{path.name} draw {draw}: {int(lost.sum())} of {packets} lost, ST-LPIPS {s['st_lpips']:.4f}, PSNR {s['psnr']:.2f}", flush=True)
mean = np.mean(scores, axis=0)
print(f"{setting} G={G} {how}: mean over {len(scores)} decodes ST-LPIPS {mean[0]:.4f}, PSNR {mean[1]:.2f}")
