/* The C23 entry points of glibc 2.38 that Mesa 26's lavapipe (built on Debian 13) calls, for a
 * Debian 12 host whose glibc is 2.36. C23 changed only what these accept (a "0b" prefix for
 * base 0 or 2, and %b in scanf), which lavapipe's own strings never use, so each one is the
 * pre-C23 function. Loaded with LD_PRELOAD by scripts/lavapipe-coop.sh; the driver's need for
 * version GLIBC_2.38 is made weak by weak_versions.py, so these unversioned ones satisfy it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }
unsigned long __isoc23_strtoul(const char *s, char **end, int base) { return strtoul(s, end, base); }
long long __isoc23_strtoll(const char *s, char **end, int base) { return strtoll(s, end, base); }
unsigned long long __isoc23_strtoull(const char *s, char **end, int base) { return strtoull(s, end, base); }

int __isoc23_sscanf(const char *s, const char *format, ...) {
  va_list args;
  va_start(args, format);
  int n = vsscanf(s, format, args);
  va_end(args);
  return n;
}
