/* Call patterns for the independent call-site count (opt-19 -passes=print-callgraph). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sq(int x) { return x * x; }
static int cube(int x) { return sq(x) * x; }
static int is_even(unsigned n);
static int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }
static int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }
int fact(int n) { return n <= 1 ? 1 : n * fact(n - 1); }
static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int (*table[2])(int) = {sq, cube};

int sum_powers(int n) {
  int s = 0;
  for (int i = 0; i < n; i++) s += sq(i) + cube(i) + table[i & 1](i);
  return s;
}

void sort_and_print(int *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_int);
  for (int i = 0; i < n; i++) printf("%d %d\n", v[i], is_even((unsigned)v[i]));
  memset(v, 0, (size_t)n * sizeof *v);
}

int driver(int argc, char **argv) {
  int v[16];
  for (int i = 0; i < 16; i++) v[i] = atoi(argv[i % argc]) + fact(i % 5);
  sort_and_print(v, 16);
  return sum_powers(argc) + is_odd((unsigned)argc) + fact(argc);
}
