"""Where compiles run: a local process pool by default, a Ray cluster when asked. Workers
compile and evaluate exported (numpy) weights; they never import TensorFlow."""
