// C++ call patterns: templates, virtual calls, exceptions (invokes), lambdas, recursion.
#include <stdexcept>
#include <vector>

struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
};
struct Square : Shape {
  double side;
  explicit Square(double s) : side(s) {}
  double area() const override { return side * side; }
};

template <typename T> T clamp_add(T a, T b, T hi) { T s = a + b; return s > hi ? hi : s; }

static double checked(double x) {
  if (x < 0) throw std::invalid_argument("negative");
  return x;
}

unsigned fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

double total(const std::vector<Shape *> &shapes) {
  double t = 0;
  for (const Shape *s : shapes) {
    try {
      t += checked(s->area());
    } catch (const std::exception &) {
      t = clamp_add(t, 1.0, 1e9);
    }
  }
  auto twice = [](double v) { return clamp_add(v, v, 1e12); };
  return twice(t) + clamp_add<int>(1, 2, 3) + fib(10);
}

double make_and_sum(int n) {
  std::vector<Shape *> shapes;
  for (int i = 0; i < n; i++) shapes.push_back(new Square(i));
  double t = total(shapes);
  for (Shape *s : shapes) delete s;
  return t;
}
