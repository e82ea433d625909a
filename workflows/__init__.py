"""Deterministic orchestration: runs inside Temporal's workflow sandbox.

Only `temporalio` is imported at the top level of these modules; everything
else comes through `workflow.unsafe.imports_passed_through()`.
"""
