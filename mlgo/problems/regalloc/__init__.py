"""The regalloc problem: features, compile command, reward, default proxy, network."""
