"""The controller: triggers in, one retrain at a time, shadow evaluation, a statistical
promotion gate, audit and rollback.

``controller.core`` (the pure decision core) and ``controller.gate`` (the promotion gate)
import nothing but numpy and the standard library, so the backtest reuses them as they are.
Everything with I/O lives in the other modules (see docs/controller.md).
"""
