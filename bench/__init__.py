"""`publisher bench`: throughput, dispatch lag, cancel latency and memory at scale, measured
against a whole deployment on this machine and written to docs/benchmarks.md."""
