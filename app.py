"""somad explainability dashboard: ``streamlit run app.py``.

Opens on the embedded demo data (generated on first start). Environment:
``SOMAD_DATA_DIR`` (dataset root), ``SOMAD_MODELS_DIR`` (models), ``SOMAD_DEVICE``.
"""
import streamlit as st

st.set_page_config(page_title="somad: SOM anomaly detection", page_icon=":material/grid_on:", layout="wide")

from dashboard import state  # noqa: E402

state.ensure_navigation()  # also runs state.init()
pages = [
    st.Page(state.PAGES["model"], title="Model", icon=":material/model_training:", default=True),
    st.Page(state.PAGES["som"], title="SOM explorer", icon=":material/grid_on:", url_path="som_explorer"),
    st.Page(state.PAGES["inspector"], title="Test inspector", icon=":material/image_search:",
            url_path="test_inspector"),
    st.Page(state.PAGES["metrics"], title="Metrics", icon=":material/monitoring:", url_path="metrics"),
    st.Page(state.PAGES["try"], title="Try an image", icon=":material/upload:", url_path="try_an_image"),
]
nav = st.navigation(pages)
state.sidebar(state.current(show_errors=False))
nav.run()
