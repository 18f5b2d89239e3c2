"""somad explainability dashboard: ``streamlit run app.py``.

Opens on the embedded demo data (generated on first start). Environment:
``SOMAD_DATA_DIR`` (dataset root), ``SOMAD_MODELS_DIR`` (models), ``SOMAD_DEVICE``.
The pages and the view state kept in the URL are defined in :mod:`dashboard.state`.
"""
import streamlit as st

st.set_page_config(page_title="somad: SOM anomaly detection", page_icon=":material/grid_on:", layout="wide")

from dashboard import memory, state  # noqa: E402

memory.tune_allocator()  # once per server process: large buffers go back to the system when freed
state.run_app()
