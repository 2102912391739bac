"""What leaves the process: the export gate in front of the exporters, held DB spans, the export
guard (scrubbing), the always-record sampler and the bounded flush at exit."""
