"""The session-state keys of the dashboard, in one place."""


class Keys:
    """Every ``st.session_state`` key the pages share (widget keys start with ``w_``).

    The view state (:data:`URL_KEYS`) is mirrored in the page URL, so a reload or a pasted link
    shows the same view.
    """

    INIT = "_init"
    NAV_RERUN = "_nav_rerun"  # see dashboard.state.ensure_navigation
    DATA_DIR = "data_dir"
    CATEGORY = "category"
    MODEL_DIR = "model_dir"
    MODEL_DATA = "model_data"  # (data_dir, category) the current model is evaluated on
    DEVICE = "device"
    NEURON = "neuron"  # (row, col)
    IMAGE = "image"  # test image as "<defect>/<file name>"
    CELL = "cell"  # (row, col) feature cell of IMAGE
    THRESHOLD = "threshold"  # image threshold
    FOOTPRINT = "footprint"  # "1": the SOM explorer overlays IMAGE's footprint on the U-matrix
    N_REGIONS = "n_regions"  # regions of the SOM explorer's region map (None = chosen automatically)
    COMPARE = "compare"  # name of the model the Compare page sets against the current one
    LAST_CLICK = "_last_click"  # see dashboard.widgets.new_click
    EVALUATED = "_evaluated"
    W_DATA_DIR = "w_data_dir"
    W_ROOT_PICK = "w_root_pick"
    W_CATEGORY = "w_category"
    W_NEURON_ROW = "w_neuron_row"
    W_NEURON_COL = "w_neuron_col"
    W_THRESHOLD = "w_threshold"
    W_CPLANE_DIM = "w_cplane_dim"
    W_CPLANE = "w_cplane"  # the component plane is drawn only when this toggle is on
    W_FOOTPRINT = "w_footprint"
    W_FOOTPRINT_IMAGE = "w_footprint_image"
    W_N_REGIONS = "w_n_regions"
    W_REGION_IMAGE = "w_region_image"
    W_COMPARE = "w_compare"
    W_COMPARE_IMAGE = "w_compare_image"
    W_UPLOADS = "w_uploads"
    W_SAVED_MODEL = "w_saved_model"
    W_RENAME = "w_rename"
    CONFIRM_DELETE = "_confirm_delete"  # name of the model whose deletion awaits confirmation
    MODEL_MESSAGE = "_model_message"  # error of the last rename, shown once
    PRESENTER = "_presenter"  # True once this session typed the presenter password (dashboard.roles)
    ROLE_MESSAGE = "_role_message"  # outcome of the last unlock try, shown once
    W_PASSWORD = "w_password"
    LINK_REFUSED = "_link_refused"  # the refusal of a link's data root, shown once above the page
