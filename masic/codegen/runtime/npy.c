/* npy.c: the .npy preamble and header, accepted exactly when numpy.load accepts them (see npy.h).
 *
 * numpy.load (numpy/lib/format.py) checks the magic "\x93NUMPY", accepts versions 1.0, 2.0 and 3.0, reads the
 * header's length (2 bytes little-endian in 1.0, 4 in 2.0 and 3.0), decodes the header (Latin-1, or UTF-8 in 3.0),
 * refuses more than 10000 characters, and evaluates it with Python's ast.literal_eval. It wants a dict with exactly
 * the keys 'descr', 'fortran_order' and 'shape', 'shape' a tuple of ints and 'fortran_order' a bool; reading the
 * data then refuses shapes no array can have (negative or bool dimensions, more than 64, or too many bytes). When a
 * version 1.0 or 2.0 header is not valid Python, numpy retries once with every name 'L' that follows a number
 * deleted (Python 2 longs, "(3L, 4L)"); the retry re-tokenizes the text, which also drops the first line's
 * indentation and a last line holding only blanks.
 *
 * So this file recognises the part of Python 3.11's grammar that literal_eval evaluates, with Python's tokenizer
 * rules: strings with every prefix (r, u, b, br, rb; f-strings are refused, as literal_eval refuses them), every
 * escape, implicit concatenation; ints in every base with underscores; floats; a real plus or minus an imaginary
 * number; one sign on a number; True, False, None, `...`; tuples, lists, sets, set(), dicts (keys and set
 * elements must be hashable); parentheses; comments; line continuations; newlines inside brackets; and outside
 * brackets, Python's indentation rules (a line after the first holding anything but blanks and comments must not
 * be indented). It evaluates only what the header needs: strings, to compare keys and 'descr'; ints, for the
 * shape; bools.
 *
 * Three refusals of headers numpy accepts, all of text nobody writes: a \N{name} escape in a string (it needs
 * Unicode's table of names); brackets nested 200 deep (CPython 3.11 accepts some such headers and refuses others,
 * by the depth of its parser's stack); and a header that needs the Python 2 retry and has a line starting with a
 * lone carriage return (Python's tokenize module then copies text unread, which this file does not model; see
 * masic_npy_parse_header). tests/runtime/test_npy_grammar.py compares the verdict with numpy.load's on many
 * generated and mutated headers, and pins the three refusals. */
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define END_OF_TEXT UINT32_MAX
#define MAX_DEPTH 199 /* brackets open at once; CPython refuses 201 always and 200 sometimes */
#define TAB_SIZE 8
#define STR_CAP 24 /* code points kept of a string: enough to compare with any key or dtype the loader reads */

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static bool refuse(char *why, size_t cap, const char *text) {
  if (cap) snprintf(why, cap, "%s", text);
  return false;
}

bool masic_npy_preamble(const uint8_t *bytes, size_t n, uint64_t file_size, masic_npy_preamble_t *p, char *why,
                        size_t why_cap) {
  if (n < sizeof magic || memcmp(bytes, magic, sizeof magic)) return refuse(why, why_cap, "not a .npy file");
  if (n < 8) return refuse(why, why_cap, "truncated .npy preamble");
  unsigned major = bytes[6], minor = bytes[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0)) {
    if (why_cap) snprintf(why, why_cap, "unsupported .npy version %u.%u (numpy reads 1.0, 2.0 and 3.0)", major, minor);
    return false;
  }
  uint64_t offset = major == 1 ? 10 : 12;
  if (n < offset) return refuse(why, why_cap, "truncated .npy preamble");
  uint64_t length = bytes[8] | (uint64_t)bytes[9] << 8;
  if (major > 1) length |= (uint64_t)bytes[10] << 16 | (uint64_t)bytes[11] << 24;
  /* Latin-1 has one byte per character, UTF-8 up to four: more bytes cannot be 10000 characters. */
  uint64_t limit = major == 3 ? MASIC_NPY_MAX_HEADER_BYTES : MASIC_NPY_MAX_HEADER_CHARS;
  if (length > limit) {
    if (why_cap)
      snprintf(why, why_cap, "a .npy header of %llu bytes, above numpy's limit of %d characters",
               (unsigned long long)length, MASIC_NPY_MAX_HEADER_CHARS);
    return false;
  }
  if (file_size < offset || length > file_size - offset)
    return refuse(why, why_cap, "truncated .npy header (the file ends inside it)");
  *p = (masic_npy_preamble_t){.major = major, .minor = minor, .header_offset = offset, .header_bytes = length};
  return true;
}

/* ---- decoding: the header's characters as code points, newlines as Python translates them ---- */

/* Strict UTF-8, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. Returns the number
 * of code points written to out (capacity n), or -1. */
static long decode_utf8(const uint8_t *s, size_t n, uint32_t *out) {
  size_t i = 0, k = 0;
  while (i < n) {
    uint8_t b = s[i];
    uint32_t cp, min;
    size_t extra;
    if (b < 0x80) {
      cp = b, extra = 0, min = 0;
    } else if (b >= 0xC2 && b <= 0xDF) {
      cp = b & 0x1F, extra = 1, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
      cp = b & 0x0F, extra = 2, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
      cp = b & 0x07, extra = 3, min = 0x10000;
    } else {
      return -1;
    }
    if (extra > n - i - 1) return -1;
    for (size_t j = 1; j <= extra; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return -1;
      cp = cp << 6 | (s[i + j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    out[k++] = cp;
    i += extra + 1;
  }
  return (long)k;
}

/* Python's compile() reads "\r\n" and a lone "\r" as "\n", inside strings too. Returns the new length. */
static size_t translate_newlines(uint32_t *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\r') {
      s[k++] = '\n';
      if (i + 1 < n && s[i + 1] == '\n') i++;
    } else {
      s[k++] = s[i];
    }
  }
  return k;
}

/* ---- tokens ---- */

typedef enum { T_END, T_NEWLINE, T_OP, T_NUMBER, T_STRING, T_NAME, T_ELLIPSIS } token_kind_t;
typedef enum { NUM_INT, NUM_FLOAT, NUM_IMAG } number_kind_t;
typedef enum { STR_TEXT, STR_BYTES } string_kind_t;

typedef struct {
  token_kind_t kind;
  uint32_t op;          /* T_OP: the character */
  number_kind_t number; /* T_NUMBER */
  uint64_t magnitude;   /* NUM_INT: the value, if !big */
  bool big;             /* NUM_INT: at least 2^64 */
  string_kind_t string; /* T_STRING */
  uint32_t text[STR_CAP];
  size_t len;   /* T_STRING: code points of the value (only the first STR_CAP kept) */
  char name[8]; /* T_NAME: the identifier if it is one of the few literal_eval knows, else "" */
} token_t;

typedef struct {
  const uint32_t *s;
  size_t n, i;
  int level;     /* brackets open */
  bool atbol;    /* at the beginning of a physical line */
  unsigned line; /* physical line, 1-based */
  bool relaxed;  /* numpy's Python 2 retry */
  bool dropped_l;
  const char *error; /* why the text was refused */
  token_t tok;       /* the current token */
} lexer_t;

static uint32_t peek(const lexer_t *x, size_t ahead) { return x->i + ahead < x->n ? x->s[x->i + ahead] : END_OF_TEXT; }

static bool fail(lexer_t *x, const char *why) {
  if (!x->error) x->error = why;
  return false;
}

static bool is_blank(uint32_t c) { return c == ' ' || c == '\t' || c == '\f'; }
static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool is_hex(uint32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static unsigned hex_value(uint32_t c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }
static bool is_ident_start(uint32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= 0x80 && c != END_OF_TEXT);
}
static bool is_ident_char(uint32_t c) { return is_ident_start(c) || is_digit(c); }

/* Adds digit d in `base` to the token's value, noting when it passes 2^64 - 1. */
static void add_digit(token_t *t, unsigned base, unsigned d) {
  if (t->big || t->magnitude > (UINT64_MAX - d) / base)
    t->big = true;
  else
    t->magnitude = t->magnitude * base + d;
}

/* Digits of `base` separated by single underscores, the first at the cursor: "1_000", "ff". */
static bool lex_digits(lexer_t *x, unsigned base, bool value) {
  for (;;) {
    uint32_t c = peek(x, 0);
    unsigned d = is_hex(c) ? hex_value(c) : 99;
    if (d >= base) return fail(x, "a malformed number");
    if (value) add_digit(&x->tok, base, d);
    x->i++;
    c = peek(x, 0);
    if (c == '_') {
      x->i++;
      continue;
    }
    d = is_hex(c) ? hex_value(c) : 99;
    if (d >= base) return true;
  }
}

/* A number ends where no name could go on: "1x" and "0b12" are errors, not two tokens. In the Python 2 retry a name
 * 'L' after it (with blanks or line continuations between, not comments or newlines) is deleted. */
static bool end_number(lexer_t *x) {
  if (x->relaxed) {
    size_t j = x->i;
    unsigned lines = 0;
    for (;;) {
      while (j < x->n && is_blank(x->s[j])) j++;
      if (j + 1 < x->n && x->s[j] == '\\' && x->s[j + 1] == '\n') {
        j += 2, lines++;
        continue;
      }
      break;
    }
    if (j < x->n && x->s[j] == 'L' && !(j + 1 < x->n && is_ident_char(x->s[j + 1]))) {
      x->i = j + 1, x->line += lines, x->dropped_l = true;
      return true;
    }
  }
  return is_ident_char(peek(x, 0)) ? fail(x, "a malformed number") : true;
}

/* Python's number tokens (Lib/tokenize.py and the C tokenizer agree on these). */
static bool lex_number(lexer_t *x) {
  token_t *t = &x->tok;
  *t = (token_t){.kind = T_NUMBER, .number = NUM_INT};
  uint32_t c = peek(x, 0);
  if (c == '0') {
    uint32_t prefix = peek(x, 1) | 0x20;
    unsigned base = prefix == 'x' ? 16 : prefix == 'o' ? 8 : prefix == 'b' ? 2 : 0;
    if (base) {
      x->i += 2;
      if (peek(x, 0) == '_') x->i++;
      if (!lex_digits(x, base, true)) return false;
      if (is_digit(peek(x, 0))) return fail(x, "a malformed number"); /* "0o8", "0b2" */
      return end_number(x);
    }
  }
  bool fraction = false;
  if (c == '.') {
    x->i++;
    fraction = true;
  } else if (c == '0') {
    /* Zeros, perhaps with underscores, then digits: "00" is 0, "07" an error, "07.5" and "07e1" floats. */
    while (peek(x, 0) == '0' || (peek(x, 0) == '_' && is_digit(peek(x, 1)))) x->i++;
    if (peek(x, 0) == '_') return fail(x, "a malformed number");
    bool nonzero = is_digit(peek(x, 0));
    if (nonzero && !lex_digits(x, 10, false)) return false;
    c = peek(x, 0);
    if (c == '.') {
      x->i++;
      fraction = true;
    } else if (c != 'e' && c != 'E' && c != 'j' && c != 'J') {
      if (nonzero) return fail(x, "a number with leading zeros");
      return end_number(x);
    }
  } else {
    if (!lex_digits(x, 10, true)) return false;
    c = peek(x, 0);
    if (c == '.') {
      x->i++;
      fraction = true;
    } else if (c != 'e' && c != 'E' && c != 'j' && c != 'J') {
      return end_number(x);
    }
  }
  t->number = NUM_FLOAT;
  if (fraction && is_digit(peek(x, 0)) && !lex_digits(x, 10, false)) return false;
  c = peek(x, 0);
  if (c == 'e' || c == 'E') {
    x->i++;
    if (peek(x, 0) == '+' || peek(x, 0) == '-') x->i++;
    if (!is_digit(peek(x, 0))) return fail(x, "a malformed number");
    if (!lex_digits(x, 10, false)) return false;
  }
  c = peek(x, 0);
  if (c == 'j' || c == 'J') {
    x->i++;
    t->number = NUM_IMAG;
  }
  return end_number(x);
}

static void append(token_t *t, uint32_t cp) {
  if (t->len < STR_CAP) t->text[t->len] = cp;
  t->len++;
}

/* Exactly `count` hex digits at body[*k], as the value of a \x, \u or \U escape. */
static bool hex_escape(const uint32_t *body, size_t end, size_t *k, int count, uint32_t *value) {
  *value = 0;
  for (int j = 0; j < count; j++, (*k)++) {
    if (*k >= end || !is_hex(body[*k])) return false;
    *value = *value << 4 | hex_value(body[*k]);
  }
  return true;
}

/* The value of a string literal's body s[start, end), as Python decodes it. */
static bool decode_string(lexer_t *x, size_t start, size_t end, bool bytes, bool raw) {
  token_t *t = &x->tok;
  const uint32_t *s = x->s;
  if (bytes)
    for (size_t k = start; k < end; k++)
      if (s[k] >= 0x80) return fail(x, "a bytes literal with a non-ASCII character");
  for (size_t k = start; k < end;) {
    uint32_t c = s[k++];
    if (c != '\\' || raw) {
      append(t, c);
      continue;
    }
    c = s[k++]; /* the scanner saw a character after every backslash */
    uint32_t value;
    switch (c) {
    case '\n': break;
    case '\\': case '\'': case '"': append(t, c); break;
    case 'a': append(t, 7); break;
    case 'b': append(t, 8); break;
    case 'f': append(t, 12); break;
    case 'n': append(t, 10); break;
    case 'r': append(t, 13); break;
    case 't': append(t, 9); break;
    case 'v': append(t, 11); break;
    case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
      value = c - '0';
      for (int j = 0; j < 2 && k < end && s[k] >= '0' && s[k] <= '7'; j++) value = value * 8 + (s[k++] - '0');
      append(t, bytes ? value & 0xFF : value);
      break;
    case 'x':
      if (!hex_escape(s, end, &k, 2, &value)) return fail(x, "a truncated \\x escape");
      append(t, value);
      break;
    case 'u': case 'U':
      if (bytes) {
        append(t, '\\'), append(t, c);
        break;
      }
      if (!hex_escape(s, end, &k, c == 'u' ? 4 : 8, &value) || value > 0x10FFFF)
        return fail(x, "a malformed \\u or \\U escape");
      append(t, value);
      break;
    case 'N':
      if (bytes) {
        append(t, '\\'), append(t, c);
        break;
      }
      return fail(x, "a \\N{...} escape (not supported)");
    default: append(t, '\\'), append(t, c); break; /* Python keeps unknown escapes as written */
    }
  }
  return true;
}

/* A string literal whose prefix has been read; the cursor is on its opening quote. */
static bool lex_string(lexer_t *x, bool bytes, bool raw, bool fstring) {
  if (fstring) return fail(x, "an f-string");
  x->tok = (token_t){.kind = T_STRING, .string = bytes ? STR_BYTES : STR_TEXT};
  uint32_t quote = peek(x, 0);
  size_t quotes = peek(x, 1) == quote && peek(x, 2) == quote ? 3 : 1;
  x->i += quotes;
  size_t start = x->i;
  for (size_t closing = 0; closing < quotes;) {
    uint32_t c = peek(x, 0);
    if (c == END_OF_TEXT || (quotes == 1 && c == '\n')) return fail(x, "an unterminated string");
    x->i++;
    if (c == '\n') x->line++;
    if (c == quote) {
      closing++;
    } else {
      closing = 0;
      if (c == '\\') { /* skips the next character, even in raw strings */
        if (peek(x, 0) == END_OF_TEXT) return fail(x, "an unterminated string");
        if (peek(x, 0) == '\n') x->line++;
        x->i++;
      }
    }
  }
  return decode_string(x, start, x->i - quotes, bytes, raw);
}

/* A name, or a string literal's prefix: b, r, u, f and their allowed pairs, in either case. */
static bool lex_name(lexer_t *x) {
  bool b = false, r = false, u = false, f = false;
  for (size_t j = 0;; j++) {
    uint32_t c = peek(x, j) | 0x20;
    if (peek(x, j) >= 0x80) break;
    if (!(b || u || f) && c == 'b')
      b = true;
    else if (!(b || u || r || f) && c == 'u')
      u = true;
    else if (!(r || u) && c == 'r')
      r = true;
    else if (!(f || b || u) && c == 'f')
      f = true;
    else
      break;
    if (peek(x, j + 1) == '\'' || peek(x, j + 1) == '"') {
      x->i += j + 1;
      return lex_string(x, b, r, f);
    }
  }
  size_t start = x->i;
  while (is_ident_char(peek(x, 0))) {
    if (peek(x, 0) >= 0x80) return fail(x, "a name literal_eval does not know");
    x->i++;
  }
  x->tok = (token_t){.kind = T_NAME};
  size_t len = x->i - start;
  if (len < sizeof x->tok.name)
    for (size_t k = 0; k < len; k++) x->tok.name[k] = (char)x->s[start + k];
  return true;
}

/* Reads the next token into x->tok, following Python's tokenizer: blank lines and comments, line continuations, and
 * outside brackets the indentation of each line that holds a token. */
static bool lex(lexer_t *x) {
  for (;;) {
    bool blank_line = false;
    if (x->atbol) {
      x->atbol = false;
      /* Python 3.11 measures indentation across line continuations; the first backslash after some blanks fixes
       * it ("Indentation cannot be split over multiple physical lines using backslashes"). The Python 2 retry's
       * re-tokenization drops the blanks before such a backslash instead. */
      unsigned col = 0, continued_col = 0;
      bool continued = false;
      for (;;) {
        uint32_t c = peek(x, 0);
        if (c == ' ') {
          col++;
        } else if (c == '\t') {
          col = (col / TAB_SIZE + 1) * TAB_SIZE;
        } else if (c == '\f') {
          col = 0;
        } else if (c == '\\') {
          if (x->relaxed) col = 0;
          else if (!continued_col) continued_col = col;
          continued = true;
          if (peek(x, 1) != '\n') return fail(x, "a backslash outside a string");
          x->i += 2, x->line++;
          if (peek(x, 0) == END_OF_TEXT) return fail(x, "a line continuation at the end");
          continue;
        } else {
          break;
        }
        x->i++;
      }
      if (continued_col) col = continued_col;
      uint32_t c = peek(x, 0);
      blank_line = c == '#' || c == '\n';
      /* The retry's re-tokenization also forgives the first line's indentation and a last line of blanks. */
      bool forgiven = x->relaxed && !continued && (x->line == 1 || c == END_OF_TEXT);
      if (!blank_line && x->level == 0 && col != 0 && !forgiven)
        return fail(x, "unexpected indentation");
    }
    while (is_blank(peek(x, 0))) x->i++;
    if (peek(x, 0) == '#')
      while (peek(x, 0) != '\n' && peek(x, 0) != END_OF_TEXT) x->i++;
    uint32_t c = peek(x, 0);
    if (c == END_OF_TEXT) {
      if (x->level) return fail(x, "an unclosed bracket");
      x->tok = (token_t){.kind = T_END};
      return true;
    }
    if (c == '\n') {
      x->i++, x->line++, x->atbol = true;
      if (blank_line || x->level > 0) continue;
      x->tok = (token_t){.kind = T_NEWLINE};
      return true;
    }
    if (c == '\\') {
      if (peek(x, 1) != '\n') return fail(x, "a backslash outside a string");
      x->i += 2, x->line++;
      if (peek(x, 0) == END_OF_TEXT) return fail(x, "a line continuation at the end");
      continue; /* the next line continues this one: its indentation does not count */
    }
    if (is_digit(c) || (c == '.' && is_digit(peek(x, 1)))) return lex_number(x);
    if (c == '.' && peek(x, 1) == '.' && peek(x, 2) == '.') {
      x->i += 3;
      x->tok = (token_t){.kind = T_ELLIPSIS};
      return true;
    }
    if (c == '\'' || c == '"') return lex_string(x, false, false, false);
    if (is_ident_start(c)) return lex_name(x);
    if (c == '(' || c == '[' || c == '{') {
      if (x->level >= MAX_DEPTH) return fail(x, "brackets nested too deep");
      x->level++;
    } else if (c == ')' || c == ']' || c == '}') {
      if (x->level == 0) return fail(x, "an unmatched closing bracket");
      x->level--;
    } else if (c != ',' && c != ':' && c != '+' && c != '-') {
      /* Any other character is an operator literal_eval refuses, or not Python. */
      return fail(x, "a character that is not part of a literal");
    }
    x->i++;
    x->tok = (token_t){.kind = T_OP, .op = c};
    return true;
  }
}

/* ---- values: what ast.literal_eval builds, as far as the header needs it ---- */

typedef enum {
  K_INT, K_BOOL, K_FLOAT, K_COMPLEX, K_STR, K_BYTES, K_NONE, K_ELLIPSIS, K_TUPLE, K_LIST, K_DICT, K_SET,
  K_SET_NAME, /* the name `set`, on its way to set() */
} kind_t;
/* The syntax node literal_eval sees: a constant, a sign applied to a constant, or anything else. */
typedef enum { N_CONSTANT, N_SIGNED, N_OTHER } node_t;

typedef struct {
  kind_t kind;
  node_t node;
  bool hashable;
  bool negative;      /* K_INT */
  uint64_t magnitude; /* K_INT, if !big */
  bool big;           /* K_INT: magnitude at least 2^64 */
  bool truth;         /* K_BOOL */
  uint32_t text[STR_CAP];
  size_t len; /* K_STR */
} value_t;

/* The elements of the tuple a value turned out to be, for 'shape'. */
typedef struct {
  int n;
  int64_t dims[MASIC_NPY_MAX_NDIM];
  const char *problem; /* the first element no array dimension can be */
} shape_sink_t;

typedef struct {
  lexer_t x;
  masic_npy_header_t *h;
  bool seen_descr, seen_fortran, seen_shape;
  bool fortran_is_bool, shape_is_tuple;
  shape_sink_t shape; /* of the last 'shape' key */
} parser_t;

static bool advance(parser_t *p) { return lex(&p->x); }
static bool at_op(const parser_t *p, uint32_t op) { return p->x.tok.kind == T_OP && p->x.tok.op == op; }
static bool refuse_value(parser_t *p, const char *why) { return fail(&p->x, why); }

static void sink_add(shape_sink_t *s, const value_t *v) {
  if (!s) return;
  const char *problem = NULL;
  if (v->kind == K_BOOL)
    problem = "the shape holds a bool";
  else if (v->kind != K_INT)
    problem = "the shape holds something other than integers";
  else if (v->negative)
    problem = "the shape has a negative dimension";
  else if (v->big || v->magnitude > INT64_MAX)
    problem = "the shape has a dimension above 2^63 - 1";
  else if (s->n == MASIC_NPY_MAX_NDIM)
    problem = "the shape has more than 64 dimensions";
  else
    s->dims[s->n] = (int64_t)v->magnitude;
  if (problem && !s->problem) s->problem = problem;
  if (s->n < MASIC_NPY_MAX_NDIM + 1) s->n++;
}

static bool parse_expression(parser_t *p, value_t *v, bool top, shape_sink_t *sink);

static bool str_equals(const value_t *v, const char *ascii) {
  size_t n = strlen(ascii);
  if (v->kind != K_STR || v->len != n) return false;
  for (size_t i = 0; i < n; i++)
    if (v->text[i] != (uint8_t)ascii[i]) return false;
  return true;
}

/* Elements up to the closing bracket `close`, separated by commas, a trailing comma allowed; the first element, if
 * any, is already in *first. Sets *hashable to whether all are. */
static bool parse_rest(parser_t *p, uint32_t close, bool *hashable, shape_sink_t *sink) {
  while (!at_op(p, close)) {
    if (!at_op(p, ',')) return refuse_value(p, "a missing comma");
    if (!advance(p)) return false;
    if (at_op(p, close)) break;
    value_t e;
    if (!parse_expression(p, &e, false, NULL)) return false;
    if (e.kind == K_SET_NAME) return refuse_value(p, "a name literal_eval does not know");
    *hashable = *hashable && e.hashable;
    sink_add(sink, &e);
  }
  return advance(p);
}

/* Keeps a string 'descr' as UTF-8; descr_exact says whether all of it fit. */
static void set_descr(masic_npy_header_t *h, const value_t *v) {
  h->descr_is_str = v->kind == K_STR;
  h->descr_exact = h->descr_is_str && v->len <= STR_CAP;
  size_t out = 0;
  for (size_t i = 0; h->descr_is_str && i < v->len && i < STR_CAP; i++) {
    uint32_t c = v->text[i];
    uint8_t enc[4];
    size_t len = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (len == 1) {
      enc[0] = (uint8_t)c;
    } else {
      for (size_t k = len - 1; k > 0; k--, c >>= 6) enc[k] = (uint8_t)(0x80 | (c & 0x3F));
      enc[0] = (uint8_t)((0xF00u >> len) | c); /* 0xC0, 0xE0 or 0xF0 and the leading bits */
    }
    if (out + len >= MASIC_NPY_DESCR_CAP) {
      h->descr_exact = false;
      break;
    }
    memcpy(h->descr + out, enc, len);
    out += len;
  }
  h->descr[out] = '\0';
}

/* The header dict itself: every key one of the three, each value remembered (the last of a repeated key wins, as
 * in Python). The first key is in *key. */
static bool parse_header_entries(parser_t *p, value_t *key) {
  for (;;) {
    if (key->kind != K_STR) return refuse_value(p, "a key that is not a string");
    bool descr = str_equals(key, "descr"), fortran = str_equals(key, "fortran_order"), shape = str_equals(key, "shape");
    if (!descr && !fortran && !shape) return refuse_value(p, "a key other than 'descr', 'fortran_order' and 'shape'");
    if (!advance(p)) return false; /* the ':' */
    value_t v;
    shape_sink_t sink = {0};
    if (!parse_expression(p, &v, false, shape ? &sink : NULL)) return false;
    masic_npy_header_t *h = p->h;
    if (descr) {
      p->seen_descr = true;
      set_descr(h, &v);
    } else if (fortran) {
      p->seen_fortran = true;
      p->fortran_is_bool = v.kind == K_BOOL;
      h->fortran_order = v.kind == K_BOOL && v.truth;
    } else {
      p->seen_shape = true;
      p->shape_is_tuple = v.kind == K_TUPLE;
      p->shape = sink;
    }
    if (at_op(p, '}')) return advance(p);
    if (!at_op(p, ',')) return refuse_value(p, "a missing comma");
    if (!advance(p)) return false;
    if (at_op(p, '}')) return advance(p);
    if (!parse_expression(p, key, false, NULL)) return false;
    if (!at_op(p, ':')) return refuse_value(p, "a dict mixed with a set");
  }
}

/* { ... }: a dict or a set; with `top`, the header dict. The '{' is the current token. */
static bool parse_braces(parser_t *p, value_t *v, bool top) {
  if (!advance(p)) return false;
  *v = (value_t){.kind = K_DICT, .node = N_OTHER};
  if (at_op(p, '}')) {
    if (top) return refuse_value(p, "a header without the keys 'descr', 'fortran_order' and 'shape'");
    return advance(p);
  }
  value_t first;
  if (!parse_expression(p, &first, false, NULL)) return false;
  if (at_op(p, ':')) {
    if (!first.hashable) return refuse_value(p, "an unhashable dict key");
    if (top) return parse_header_entries(p, &first);
    for (;;) {
      value_t value, key;
      if (!advance(p) || !parse_expression(p, &value, false, NULL)) return false;
      if (at_op(p, '}')) return advance(p);
      if (!at_op(p, ',')) return refuse_value(p, "a missing comma");
      if (!advance(p)) return false;
      if (at_op(p, '}')) return advance(p);
      if (!parse_expression(p, &key, false, NULL)) return false;
      if (!at_op(p, ':')) return refuse_value(p, "a dict mixed with a set");
      if (!key.hashable) return refuse_value(p, "an unhashable dict key");
    }
  }
  if (top) return refuse_value(p, "a header that is a set, not a dict");
  *v = (value_t){.kind = K_SET, .node = N_OTHER};
  bool hashable = first.hashable;
  if (!parse_rest(p, '}', &hashable, NULL)) return false;
  return hashable ? true : refuse_value(p, "an unhashable set element");
}

/* An atom: a bracketed display, a parenthesized expression, a number, strings, a name or `...`. */
static bool parse_atom(parser_t *p, value_t *v, bool top, shape_sink_t *sink) {
  token_t *t = &p->x.tok;
  if (at_op(p, '(')) {
    if (!advance(p)) return false;
    if (at_op(p, ')')) {
      *v = (value_t){.kind = K_TUPLE, .node = N_OTHER, .hashable = true};
      if (sink) *sink = (shape_sink_t){0};
      return advance(p);
    }
    /* Parentheses around one expression are no node at all: "((2, 3))" is the tuple (2, 3), "-(1)" a signed 1. */
    if (!parse_expression(p, v, top, sink)) return false;
    if (at_op(p, ')')) return advance(p);
    if (!at_op(p, ',')) return refuse_value(p, "a parenthesized expression literal_eval refuses");
    if (top) return refuse_value(p, "a header that is a tuple, not a dict");
    if (sink) *sink = (shape_sink_t){0};
    sink_add(sink, v);
    bool hashable = v->hashable;
    if (!parse_rest(p, ')', &hashable, sink)) return false;
    *v = (value_t){.kind = K_TUPLE, .node = N_OTHER, .hashable = hashable};
    return true;
  }
  if (at_op(p, '[')) {
    if (!advance(p)) return false;
    *v = (value_t){.kind = K_LIST, .node = N_OTHER};
    if (at_op(p, ']')) return advance(p);
    value_t first;
    bool hashable = true;
    if (!parse_expression(p, &first, false, NULL)) return false;
    return parse_rest(p, ']', &hashable, NULL);
  }
  if (at_op(p, '{')) return parse_braces(p, v, top);
  if (t->kind == T_NUMBER) {
    kind_t kind = t->number == NUM_INT ? K_INT : t->number == NUM_FLOAT ? K_FLOAT : K_COMPLEX;
    *v = (value_t){.kind = kind, .node = N_CONSTANT, .hashable = true, .magnitude = t->magnitude, .big = t->big};
    return advance(p);
  }
  if (t->kind == T_STRING) {
    /* Adjacent strings are one: "'<' 'f4'" is '<f4'; bytes and text do not mix. */
    *v = (value_t){.kind = t->string == STR_BYTES ? K_BYTES : K_STR, .node = N_CONSTANT, .hashable = true};
    while (t->kind == T_STRING) {
      if ((t->string == STR_BYTES) != (v->kind == K_BYTES)) return refuse_value(p, "bytes joined to text");
      for (size_t i = 0; i < t->len; i++) {
        if (v->len < STR_CAP) v->text[v->len] = i < STR_CAP ? t->text[i] : 0;
        v->len++;
      }
      if (!advance(p)) return false;
    }
    return true;
  }
  if (t->kind == T_ELLIPSIS) {
    *v = (value_t){.kind = K_ELLIPSIS, .node = N_CONSTANT, .hashable = true};
    return advance(p);
  }
  if (t->kind == T_NAME) {
    if (!strcmp(t->name, "True") || !strcmp(t->name, "False")) {
      *v = (value_t){.kind = K_BOOL, .node = N_CONSTANT, .hashable = true, .truth = t->name[0] == 'T'};
    } else if (!strcmp(t->name, "None")) {
      *v = (value_t){.kind = K_NONE, .node = N_CONSTANT, .hashable = true};
    } else if (!strcmp(t->name, "set")) {
      *v = (value_t){.kind = K_SET_NAME, .node = N_OTHER}; /* only as set() */
    } else {
      return refuse_value(p, "a name literal_eval does not know");
    }
    return advance(p);
  }
  return refuse_value(p, "a token that does not start a literal");
}

static bool is_real(const value_t *v) { return v->kind == K_INT || v->kind == K_FLOAT; }

/* An expression literal_eval evaluates: an atom, set(), a sign on a number, or a real plus or minus an imaginary
 * number ("1+2j", "-1.5-0j"). */
static bool parse_expression(parser_t *p, value_t *v, bool top, shape_sink_t *sink) {
  if (at_op(p, '+') || at_op(p, '-')) {
    bool minus = p->x.tok.op == '-';
    if (!advance(p) || !parse_atom(p, v, false, NULL)) return false;
    if (v->node != N_CONSTANT || !(is_real(v) || v->kind == K_COMPLEX))
      return refuse_value(p, "a sign on something other than a number");
    v->node = N_SIGNED;
    v->negative = minus && (v->big || v->magnitude != 0);
  } else if (!parse_atom(p, v, top, sink)) {
    return false;
  }
  if (v->kind == K_SET_NAME) {
    /* set() is the empty set, also as "(set)()": the name goes back up through parentheses to its call. */
    if (at_op(p, ')')) return true;
    if (!at_op(p, '(')) return refuse_value(p, "a name literal_eval does not know");
    if (!advance(p)) return false;
    if (!at_op(p, ')')) return refuse_value(p, "a call literal_eval refuses");
    *v = (value_t){.kind = K_SET, .node = N_OTHER};
    if (!advance(p)) return false;
  }
  if (at_op(p, '+') || at_op(p, '-')) {
    if (v->node == N_OTHER || !is_real(v)) return refuse_value(p, "a sum that is not a complex number");
    value_t right;
    if (!advance(p) || !parse_atom(p, &right, false, NULL)) return false;
    if (right.node != N_CONSTANT || right.kind != K_COMPLEX)
      return refuse_value(p, "a sum that is not a complex number");
    *v = (value_t){.kind = K_COMPLEX, .node = N_OTHER, .hashable = true};
    if (at_op(p, '+') || at_op(p, '-')) return refuse_value(p, "a sum that is not a complex number");
  }
  /* Whatever follows must end the expression; anything else (a call, an operator) is refused by the caller. */
  return true;
}

bool masic_npy_parse_header(const uint8_t *text, size_t n, unsigned major, masic_npy_header_t *h, char *why,
                            size_t why_cap) {
  *h = (masic_npy_header_t){0};
  if (n > MASIC_NPY_MAX_HEADER_BYTES) return refuse(why, why_cap, "a .npy header above numpy's limit");
  uint32_t *cps = malloc((n ? n : 1) * sizeof *cps);
  if (!cps) return refuse(why, why_cap, "out of memory reading the .npy header");
  long count;
  if (major == 3) {
    count = decode_utf8(text, n, cps);
  } else {
    for (size_t i = 0; i < n; i++) cps[i] = text[i];
    count = (long)n;
  }
  const char *problem = NULL, *strict_error = NULL;
  if (count < 0)
    problem = "a version 3.0 header that is not UTF-8";
  else if (count > MASIC_NPY_MAX_HEADER_CHARS)
    problem = "a header above numpy's limit of 10000 characters";
  for (long i = 0; !problem && i < count; i++)
    if (cps[i] == 0) problem = "a NUL character in the header";
  bool ok = false;
  /* Python's tokenize module, which numpy's retry runs, reads a line that starts (after blanks) with a lone '\r' as
   * blank and copies it unread (outside brackets; inside, the '\r' is an error token copied as it is): its 'L's
   * stay, its brackets are not counted, its blanks are kept. The retry is not attempted when such a line holds more
   * than blanks before its '\n', wherever it is (numpy accepts some of these headers; nobody writes them). */
  bool retry = major < 3;
  for (long i = 0; !problem && i < count; i++) {
    if (i && cps[i - 1] != '\n') continue;
    long j = i;
    while (j < count && (cps[j] == ' ' || cps[j] == '\t' || cps[j] == '\f')) j++;
    if (j == count || cps[j] != '\r' || (j + 1 < count && cps[j + 1] == '\n')) continue;
    long k = j + 1;
    while (k < count && (cps[k] == ' ' || cps[k] == '\t' || cps[k] == '\f' || cps[k] == '\r')) k++;
    if (k < count ? cps[k] != '\n' : k > j + 1) retry = false;
  }
  size_t len = problem ? 0 : translate_newlines(cps, (size_t)count);
  size_t start = 0;
  while (start < len && (cps[start] == ' ' || cps[start] == '\t')) start++; /* literal_eval's lstrip(" \t") */
  /* Version 1.0 and 2.0 headers get numpy's Python 2 retry: the relaxed grammar accepts what it accepts. */
  for (int relaxed = 0; !problem && !ok && relaxed <= retry; relaxed++) {
    parser_t p = {.x = {.s = cps + start, .n = len - start, .atbol = true, .line = 1, .relaxed = relaxed}, .h = h};
    *h = (masic_npy_header_t){0};
    value_t v;
    bool parsed = advance(&p) && parse_expression(&p, &v, true, NULL);
    while (parsed && p.x.tok.kind == T_NEWLINE) parsed = advance(&p);
    if (parsed && p.x.tok.kind != T_END) parsed = fail(&p.x, "text after the header's dict");
    if (parsed && v.kind != K_DICT) parsed = fail(&p.x, "a header that is not a dict");
    if (parsed && !(p.seen_descr && p.seen_fortran && p.seen_shape))
      parsed = fail(&p.x, "a header without the keys 'descr', 'fortran_order' and 'shape'");
    if (parsed && !p.shape_is_tuple) parsed = fail(&p.x, "a shape that is not a tuple");
    if (parsed && p.shape.problem) parsed = fail(&p.x, p.shape.problem);
    if (parsed && !p.fortran_is_bool) parsed = fail(&p.x, "a fortran_order that is not True or False");
    if (parsed) {
      h->ndim = p.shape.n;
      memcpy(h->shape, p.shape.dims, (size_t)p.shape.n * sizeof *h->shape);
      h->python2 = relaxed;
      ok = true;
    } else if (!relaxed) {
      strict_error = p.x.error; /* the reason to report is the strict grammar's */
    }
  }
  if (!problem) problem = strict_error;
  free(cps);
  if (ok) return true;
  if (why_cap) snprintf(why, why_cap, "%s", problem ? problem : "an unreadable header");
  return false;
}

bool masic_npy_data_bytes(const masic_npy_header_t *h, uint64_t itemsize, uint64_t *nbytes) {
  /* numpy multiplies the item size by every non-zero dimension and refuses a product above INT64_MAX, even when
   * another dimension is zero. */
  uint64_t product = itemsize;
  bool empty = false;
  for (int i = 0; i < h->ndim; i++) {
    uint64_t d = (uint64_t)h->shape[i];
    if (d == 0) {
      empty = true;
      continue;
    }
    if (product > (uint64_t)INT64_MAX / d) return false;
    product *= d;
  }
  *nbytes = empty ? 0 : product;
  return true;
}

bool masic_npy_descr_is(const masic_npy_header_t *h, const char *descr) {
  return h->descr_is_str && h->descr_exact && !strcmp(h->descr, descr);
}

size_t masic_npy_format_header(uint8_t *buf, const char *descr, int ndim, const int64_t *shape) {
  char dict[MASIC_NPY_HEADER_WRITE_CAP];
  int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < ndim && len > 0 && (size_t)len < sizeof dict; i++)
    len += snprintf(dict + len, sizeof dict - (size_t)len, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (len > 0 && (size_t)len < sizeof dict)
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%s), }", ndim == 1 ? "," : "");
  size_t n = len > 0 && (size_t)len < sizeof dict ? (size_t)len : 0;
  size_t total = 10 + n + 1;
  size_t padded = (total + 63) / 64 * 64; /* the data starts 64-aligned */
  size_t header_len = padded - 10;
  memcpy(buf, magic, sizeof magic);
  buf[6] = 1, buf[7] = 0, buf[8] = (uint8_t)(header_len & 0xff), buf[9] = (uint8_t)(header_len >> 8);
  memcpy(buf + 10, dict, n);
  memset(buf + 10 + n, ' ', padded - total);
  buf[padded - 1] = '\n';
  return padded;
}
