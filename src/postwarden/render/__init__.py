"""Render every config file of a mail host from the policy.

Each target has a module with one entry point of the same shape::

    render_<target>(policy, secrets, host, source) -> list[RenderedFile]

``source`` names the policy file in the managed-by header. The renderers are
pure: no I/O, the same input gives byte-identical output.
"""
