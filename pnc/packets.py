"""Byte-exact packetisation of progressive PNC streams (Wang et al., RTSS 2023, Sec. V).

Each coded channel is cut into packets of at most 64 bytes: one flag byte followed by up to
63 payload bytes. The flag byte names the channel (bits 0-6) and marks its last packet
(bit 7); the link delivers packets with their lengths (as a radio or serial frame does), so
no padding and no length field is needed. Channels are sent in order, most important
first; the receiver rebuilds every channel whose last packet arrived, and uses the leading
run of complete channels (a channel cut by the deadline is dropped, as in the paper's
receiver). The paper's testbed additionally frames each channel with a sequence number,
a length and a CRC for its serial link; a simulation over a lossless link does not need them.
"""
from __future__ import annotations

BLOCK = 64
PAYLOAD = BLOCK - 1
LAST = 0x80
MAX_CHANNELS = 0x80


def packetize(channels: list[bytes]) -> list[bytes]:
    """The packets of the coded ``channels``, in sending order (an empty channel still
    sends its flag byte, so the receiver knows it is complete)."""
    if len(channels) > MAX_CHANNELS:
        raise ValueError(f"at most {MAX_CHANNELS} channels fit the flag byte, got {len(channels)}")
    packets = []
    for index, data in enumerate(channels):
        count = max(1, -(-len(data) // PAYLOAD))
        for b in range(count):
            flag = index | (LAST if b == count - 1 else 0)
            packets.append(bytes([flag]) + data[b * PAYLOAD:(b + 1) * PAYLOAD])
    return packets


def depacketize(packets: list[bytes], channels: int) -> list[bytes | None]:
    """The channels rebuilt from the ``packets`` that arrived; ``None`` where the last
    packet of a channel is missing."""
    parts = [bytearray() for _ in range(channels)]
    complete = [False] * channels
    for number, packet in enumerate(packets):
        if not 1 <= len(packet) <= BLOCK:
            raise ValueError(f"packet {number} has {len(packet)} bytes (1..{BLOCK} allowed)")
        index = packet[0] & ~LAST
        if index >= channels:
            raise ValueError(f"packet {number} names channel {index} of {channels}")
        parts[index] += packet[1:]
        complete[index] = complete[index] or bool(packet[0] & LAST)
    return [bytes(p) if done else None for p, done in zip(parts, complete)]


def leading_channels(channels: list[bytes | None]) -> list[bytes]:
    """The leading run of complete channels (what the decoder uses)."""
    prefix = []
    for data in channels:
        if data is None:
            break
        prefix.append(data)
    return prefix


def arrived(packets: list[bytes], budget: int) -> list[bytes]:
    """The packets wholly delivered within ``budget`` bytes, sent in order."""
    sent, out = 0, []
    for packet in packets:
        sent += len(packet)
        if sent > budget:
            break
        out.append(packet)
    return out
