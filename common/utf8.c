#include "utf8.h"

#include <string.h>

/*
 * The state packs what the validator expects next. Bits 0-3 count the continuation bytes left,
 * and bits 8-15 and 16-23 hold the lowest and highest value allowed for the next byte. Those
 * bounds rule out overlong forms, surrogates and code points above U+10FFFF. The state 0 means
 * "between characters" and 1 means "invalid".
 */
static uint32_t utf8_expect(uint32_t left, uint8_t low, uint8_t high)
{
        return left | (uint32_t)low << 8 | (uint32_t)high << 16;
}

uint32_t utf8_feed(uint32_t state, const uint8_t *data, size_t len)
{
        for (size_t i = 0; i < len && state != UTF8_REJECT; i++) {
                uint8_t c;

                /* Skip ASCII eight bytes at a time between characters: most queries are ASCII. */
                while (state == UTF8_ACCEPT && i + 8 <= len) {
                        uint64_t chunk;

                        memcpy(&chunk, data + i, sizeof(chunk));
                        if (chunk & 0x8080808080808080ULL)
                                break;
                        i += 8;
                }
                if (i == len)
                        break;
                c = data[i];

                if (state == UTF8_ACCEPT) {
                        if (c < 0x80)
                                continue;
                        if (c >= 0xC2 && c <= 0xDF)
                                state = utf8_expect(1, 0x80, 0xBF);
                        else if (c == 0xE0)
                                state = utf8_expect(2, 0xA0, 0xBF);
                        else if (c == 0xED)
                                state = utf8_expect(2, 0x80, 0x9F);
                        else if (c >= 0xE1 && c <= 0xEF)
                                state = utf8_expect(2, 0x80, 0xBF);
                        else if (c == 0xF0)
                                state = utf8_expect(3, 0x90, 0xBF);
                        else if (c >= 0xF1 && c <= 0xF3)
                                state = utf8_expect(3, 0x80, 0xBF);
                        else if (c == 0xF4)
                                state = utf8_expect(3, 0x80, 0x8F);
                        else
                                state = UTF8_REJECT;
                        continue;
                }

                uint32_t left = state & 0xF;
                uint8_t low = (uint8_t)(state >> 8), high = (uint8_t)(state >> 16);

                if (c < low || c > high)
                        state = UTF8_REJECT;
                else if (left == 1)
                        state = UTF8_ACCEPT;
                else
                        state = utf8_expect(left - 1, 0x80, 0xBF);
        }
        return state;
}
