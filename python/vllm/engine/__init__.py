"""The engine: arguments, the core loop over scheduler and worker, and the
processing of its outputs into RequestOutputs."""
