#pragma once
// CRC-32 (IEEE 802.3, as zlib): detects truncation and bit flips in model files.
#include <cstddef>
#include <cstdint>

namespace pyflame_rt {
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);
}
