"""The inlining problem: features, compile command, reward, default proxy, network."""
