"""Full-weight models: bases and fine-tunes, their files and manifests."""
