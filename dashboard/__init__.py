"""Streamlit-side code of the somad dashboard: settings, cached loaders, widgets, session state, images.

Dependency direction: ``pages/*`` -> ``dashboard`` -> ``somad``. Everything but
:mod:`dashboard.loaders` and :mod:`dashboard.state` is pure (no Streamlit calls) and tested directly.
"""
