"""`publisher bench`: throughput and cancels a second against their bare floors, scaling by
worker count, dispatch lag, cancel latency and memory at scale, measured against a whole
deployment on this machine and written to docs/benchmarks.md."""
