"""Streamlit-side code of the somad dashboard: settings, cached loaders, widgets, session state, images.

Dependency direction: ``pages/*`` -> ``dashboard`` -> ``somad``. :mod:`dashboard.events`,
:mod:`dashboard.images`, :mod:`dashboard.help` and :mod:`dashboard.keys` are pure (no Streamlit calls)
and tested directly; :mod:`dashboard.state`, :mod:`dashboard.loaders`, :mod:`dashboard.widgets` and
:mod:`dashboard.form` call Streamlit.
"""
