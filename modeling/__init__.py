"""Model loading: fresh Llamas, HF directories, reward and value heads, GGUF import, devices and precision."""
