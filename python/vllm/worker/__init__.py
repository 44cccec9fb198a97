"""The worker side: KV-cache allocation, thread placement and the model runner."""
