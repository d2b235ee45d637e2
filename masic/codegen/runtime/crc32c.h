/* crc32c.h: CRC-32C (Castagnoli, as iSCSI and ext4 use it), the checksum of every piece of weights.bin.
 *
 * The CPU's own instructions compute it where it has them, detected at run time: SSE4.2 `crc32` on x86-64, the
 * ARMv8 CRC32 extension (on every 64-bit Raspberry Pi) on aarch64; elsewhere a portable slicing-by-8 table.
 * masic/codegen/weights.py computes the same function when it writes the file. */
#ifndef MASIC_CRC32C_H
#define MASIC_CRC32C_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of p[0..n) continuing from `crc` (0 for a new checksum): crc32c("123456789") = 0xe3069283. */
uint32_t masic_crc32c(uint32_t crc, const void *p, size_t n);

/* The same with the portable table, whatever the CPU has (for tests comparing the two). */
uint32_t masic_crc32c_portable(uint32_t crc, const void *p, size_t n);

/* True if masic_crc32c uses the CPU's CRC instructions. */
bool masic_crc32c_hardware(void);

#endif
