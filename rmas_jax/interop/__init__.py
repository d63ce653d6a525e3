"""The public PyTorch release's link checkpoints in and out: `.pt` files without torch, manifests, conversion."""
