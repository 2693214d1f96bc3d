// Source of tests/data/remarks/spills.yaml (tests/test_measure.py says how it was made).
extern "C" double mix(const double *a, const double *b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  double t0 = 1, t1 = 1, t2 = 1, t3 = 1, t4 = 1, t5 = 1, t6 = 1, t7 = 1;
  for (int i = 0; i + 8 <= n; i += 8) {
    s0 += a[i] * b[i]; s1 += a[i+1] * b[i+1]; s2 += a[i+2] * b[i+2]; s3 += a[i+3] * b[i+3];
    s4 += a[i+4] * b[i+4]; s5 += a[i+5] * b[i+5]; s6 += a[i+6] * b[i+6]; s7 += a[i+7] * b[i+7];
    t0 *= a[i] + s7; t1 *= a[i+1] + s6; t2 *= a[i+2] + s5; t3 *= a[i+3] + s4;
    t4 *= b[i] + s3; t5 *= b[i+1] + s2; t6 *= b[i+2] + s1; t7 *= b[i+3] + s0;
  }
  return s0+s1+s2+s3+s4+s5+s6+s7 + t0*t1*t2*t3*t4*t5*t6*t7;
}
namespace ns {
template <typename T> T churn(const T *v, int n) {
  T h = 5381, g = 7, k = 11, m = 13, p = 17, q = 19, r = 23, u = 29, w = 37;
  for (int i = 0; i < n; i++) {
    h = h * 33 + v[i]; g ^= h >> 3; k += g * 5; m -= k; p ^= m << 1; q += p;
    r ^= q; u += r * 3; w += u ^ h;
    if (v[i] == 0) h += churn(v + i + 1, n - i - 1);
  }
  return h ^ g ^ k ^ m ^ p ^ q ^ r ^ u ^ w;
}
}  // namespace ns
long use(const long *v, int n) { return ns::churn(v, n) + [&] { return ns::churn(v, n / 2); }(); }
