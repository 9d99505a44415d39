"""PNC (pnc/): network shapes, tail-drop, latent quantisation, Huffman codes, packets, the
link simulator's bookkeeping, the image-codec baselines and the whole sender/receiver chain."""
import math

import numpy as np
import pytest
import torch

from pnc import baselines
from pnc.codec import PNCCodec
from pnc.huffman import HuffmanCode, channel_codes, code_lengths
from pnc.link import Trace
from pnc.model import PNC, PRESETS, drop_tail, sample_kept_channels
from pnc.offload import Ladder
from pnc.packets import BLOCK, LAST, arrived, depacketize, leading_channels, packetize
from pnc.quantize import LatentQuantizer, calibrate_clip


# ----------------------------------------------------------------------------- network

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_and_output_range(preset):
    model = PNC(preset).eval()
    c = model.config
    x = torch.rand(2, c.image_channels, c.image_size, c.image_size)
    z = model.encoder(x)
    assert z.shape == (2, c.latent_channels, c.latent_size, c.latent_size) and (z >= 0).all()
    y = model(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_paper_sizes():
    """The paper's network: 224x224 -> 10 x 32 x 32; 5,354 encoder and 361,027 decoder weights."""
    model = PNC("imagenet")
    assert model.config.latent_size == 32
    assert sum(p.numel() for p in model.encoder.parameters()) == 5354
    assert sum(p.numel() for p in model.decoder.parameters()) == 361027


def test_drop_tail_zeroes_the_last_channels():
    z = torch.rand(3, 10, 4, 4) + 0.1
    for k in (0, 1, 4, 10):
        kept = drop_tail(z, k)
        assert torch.equal(kept[:, :k], z[:, :k]) and not kept[:, k:].any()
    with pytest.raises(ValueError):
        drop_tail(z, 11)


def test_kept_channels_are_uniform_in_one_to_c():
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_kept_channels(10, g) for _ in range(5000)])
    counts = np.bincount(draws, minlength=11)
    assert counts[0] == 0 and draws.max() == 10
    assert counts[1:].min() > 400 and counts[1:].max() < 600          # 500 expected each


def test_tail_drop_only_in_training():
    model = PNC("fmnist")
    seen = []
    model.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(1)
    model.train()
    for _ in range(20):
        model(x)
    active = [int((z.abs().sum((0, 2, 3)) > 0).sum()) for z in seen]
    assert min(active) < 10                                        # something was dropped
    for z in seen:                                                 # always a prefix
        alive = (z.abs().sum((0, 2, 3)) > 0).tolist()
        assert alive == sorted(alive, reverse=True)
    seen.clear()
    model.eval()(x)
    model.train()
    model.tail_drop = False
    model(x)
    assert all(int((z.abs().sum((0, 2, 3)) > 0).sum()) == int((model.encoder(x).abs().sum((0, 2, 3)) > 0).sum())
               for z in seen)


# ----------------------------------------------------------------------------- quantisation

def test_quantisation_round_trip_and_error_bound():
    q = LatentQuantizer(clip=2.0, bits=6)
    symbols = torch.arange(64, dtype=torch.uint8)
    assert torch.equal(q.quantize(q.dequantize(symbols)), symbols)
    z = torch.linspace(0, 2.0, 10001)
    err = (q.dequantize(q.quantize(z)) - z).abs().max().item()
    assert err <= 2.0 / 63 / 2 + 2.0 / 255 / 2 + 1e-6            # 6-bit step / 2 + uint8 step / 2
    assert q.quantize(torch.tensor([0.0, -1.0, 5.0])).tolist() == [0, 0, 63]
    assert q.dequantize(torch.tensor([0])).item() == 0.0


def test_quantiser_rejects_bad_settings():
    with pytest.raises(ValueError):
        LatentQuantizer(clip=0.0)
    with pytest.raises(ValueError):
        LatentQuantizer(clip=1.0, bits=9)


def test_calibrated_clip_is_a_high_percentile():
    z = torch.cat([torch.zeros(1000), torch.linspace(0.001, 1, 100000)])
    assert calibrate_clip(z) == pytest.approx(0.999, abs=1e-3)


# ----------------------------------------------------------------------------- Huffman

def test_code_lengths_hand_example():
    assert code_lengths(np.array([1, 1, 2, 4])).tolist() == [3, 3, 2, 1]
    code = HuffmanCode((3, 3, 2, 1))
    assert code.codes == [0b110, 0b111, 0b10, 0b0]                 # canonical


def test_huffman_round_trip_kraft_and_efficiency():
    rng = np.random.default_rng(0)
    x = np.minimum(rng.geometric(0.3, 5000) - 1, 63)
    counts = np.bincount(x, minlength=64)
    code = HuffmanCode.from_counts(counts)
    assert sum(2.0 ** -l for l in code.lengths) == pytest.approx(1.0)
    data = code.encode(x)
    assert len(data) == math.ceil(code.bits(x) / 8)
    np.testing.assert_array_equal(code.decode(data, len(x)), x)
    p = counts[counts > 0] / counts.sum()
    entropy = -(p * np.log2(p)).sum()
    assert entropy <= code.bits(x) / len(x) < entropy + 1


def test_huffman_errors():
    code = HuffmanCode.from_counts(np.ones(4))
    with pytest.raises(ValueError, match="end after"):
        code.decode(code.encode([1, 2, 3]), 40)
    with pytest.raises(ValueError, match="symbols"):
        code.encode([4])


def test_channel_codes_fit_each_channel():
    rng = np.random.default_rng(1)
    symbols = np.stack([np.zeros((50, 7, 7), int), rng.integers(0, 64, (50, 7, 7))], axis=1)
    zeros, uniform = channel_codes(symbols, 64)
    assert zeros.lengths[0] == 1 and max(uniform.lengths) <= 7


# ----------------------------------------------------------------------------- packets

def test_packets_are_byte_exact():
    channels = [b"a" * 10, b"b" * 63, b"c" * 64, b""]
    packets = packetize(channels)
    assert [len(p) for p in packets] == [11, 64, 64, 2, 1]
    assert [p[0] for p in packets] == [0 | LAST, 1 | LAST, 2, 2 | LAST, 3 | LAST]
    assert all(len(p) <= BLOCK for p in packets)
    assert depacketize(packets, 4) == channels
    assert sum(map(len, packets)) == sum(map(len, channels)) + len(packets)


def test_partial_delivery_keeps_the_leading_complete_channels():
    channels = [b"a" * 10, b"b" * 100, b"c" * 5]
    packets = packetize(channels)                                  # 11, 64, 38, 6 bytes
    for budget, expected in [(10, 0), (11, 1), (112, 1), (113, 2), (118, 2), (119, 3)]:
        got = depacketize(arrived(packets, budget), 3)
        assert len(leading_channels(got)) == expected, budget
    with pytest.raises(ValueError, match="channel 3"):
        depacketize([bytes([3 | LAST])], 3)


# ----------------------------------------------------------------------------- link and ladders

def test_constant_trace_budgets():
    trace = Trace.constant(16)                                     # 2000 bytes/s
    assert trace.budgets(4, 0.1).tolist() == [200] * 4
    assert trace.budgets(2, 0.1, encode_seconds=0.025).tolist() == [150, 150]


def test_trace_integral_and_csv(tmp_path):
    trace = Trace("t", np.array([0.0, 1.0, 3.0]), np.array([100.0, 0.0, 50.0]))
    assert trace.delivered([0.5, 1.0, 2.0, 4.0]).tolist() == [50.0, 100.0, 100.0, 150.0]
    assert trace.budgets(4, 1.0).tolist() == [100, 0, 0, 50]
    path = tmp_path / "t.csv"
    path.write_text("# my trace\ntime_s,kbps\n0,0.8\n1,0\n3,0.4\n")
    assert Trace.from_csv(path).budgets(4, 1.0).tolist() == [100, 0, 0, 50]
    jam = Trace.jamming(16, 100.0, seed=3)
    assert set(np.unique(jam.rates)) <= {2000.0, 200.0}
    assert 0.1 < (jam.rates < 2000).mean() < 0.5
    with pytest.raises(ValueError):
        Trace("bad", np.array([1.0]), np.array([1.0]))


def test_ladder_bookkeeping():
    ladder = Ladder("x", np.array([[10, 20, 30], [5, 5, 50]]), np.array([[False, True, True], [True, False, True]]))
    assert ladder.correct_at(4).tolist() == [False, False]          # nothing decodable: wrong
    assert ladder.correct_at(10).tolist() == [False, False]         # image 2 at step 2 (5 B)
    assert ladder.correct_at(np.array([20, 50])).tolist() == [True, True]
    assert ladder.accuracy(25) == 50.0
    assert ladder.step_points() == [(7.5, 50.0), (12.5, 50.0), (40.0, 100.0)]


# ----------------------------------------------------------------------------- baselines

def test_progressive_jpeg_prefixes_decode():
    rng = np.random.default_rng(0)
    pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
    data = baselines.encode_jpeg(pixels, 50, progressive=True)
    prefixes = baselines.scan_prefixes(data)
    assert len(prefixes) > 1 and prefixes == sorted(prefixes) and prefixes[-1] == len(data)
    images = [baselines.decode_prefix(data, n, grey=True) for n in prefixes]
    assert all(im.shape == (28, 28) for im in images)
    errors = [np.abs(im.astype(int) - pixels).mean() for im in images]
    assert errors[-1] < errors[0]                                  # later scans refine
    assert baselines.decode(baselines.encode_webp(pixels, 50)).shape == (28, 28, 3)


# ----------------------------------------------------------------------------- the chain

def test_sender_to_receiver_matches_tail_dropped_decoding():
    torch.manual_seed(0)
    model = PNC("fmnist").eval()
    images = torch.rand(16, 1, 28, 28)
    codec = PNCCodec.calibrate(model, images)
    image = images[3]
    coded = codec.encode(image)
    packets = packetize(coded)
    symbols = torch.from_numpy(codec.symbols(image[None]))
    for k in (0, 1, 5, 10):
        budget = sum(len(p) for p in packetize(coded[:k]))
        received = depacketize(arrived(packets, budget), codec.channels)
        assert len(leading_channels(received)) == k
        decoded = codec.decode(received)
        expected = model.decoder(drop_tail(codec.quantizer.dequantize(symbols), k))[0]
        assert torch.equal(decoded, expected)
    cabac = codec.encode(image, "cabac")
    assert torch.equal(codec.decode(cabac, "cabac"), codec.decode(coded))
    restored = PNCCodec.from_state(model, codec.state_dict())
    assert restored.encode(image) == coded
