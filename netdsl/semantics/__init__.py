"""The semantic engine: what a program, or the manifests emitted for a target, allow over a topology.

Each target has its own evaluator that reads the emitted objects (never the IR), so comparing an
evaluator's verdicts with the program's is a check of the compiler's translation, not a tautology.
"""
