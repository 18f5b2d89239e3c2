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
    DRAWN_SELECTION = "_drawn_selection"  # see dashboard.widgets.selection_drawing
    W_DATA_DIR = "w_data_dir"
    W_ROOT_PICK = "w_root_pick"
    W_CATEGORY = "w_category"
    W_NEURON_ROW = "w_neuron_row"
    W_NEURON_COL = "w_neuron_col"
    W_THRESHOLD = "w_threshold"
    W_CPLANE_DIM = "w_cplane_dim"
    W_CPLANE = "w_cplane"  # the component plane is drawn only when this toggle is on
    W_CONTRIB = "w_contrib_on"  # the feature contributions of a clicked cell are drawn only when this toggle is on
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
    # issue 21: acting on the inspection (dashboard/teaching.py, dashboard/teach_panel.py)
    THRESHOLD_ORIGIN = "_threshold_origin"  # (model_dir, rule of the last preset, moved by hand since?)
    TEACH_PREVIEW = "_teach_preview"  # (model_dir, paths, Preview) of the last preview
    TEACH_JOB = "_teach_job"  # the teaching job this session started, followed until it ends
    TEACH_RESULT = "_teach_result"  # what the last "Mark as normal" did, shown once on the new version
    SAVED_VERSION = "_saved_version"  # message of the last saved threshold version
    VALIDATION = "_validation"  # (model_dir, folder, labels, scores) of the scored validation folder
    W_TABLE_ROWS = "_w_table_rows"  # rows of the test table selected on the previous run
    W_MARK_SCOPE = "w_mark_scope"
    W_MARK_CONFIRM = "w_mark_confirm"
    W_MARK_NOTE = "w_mark_note"
    W_MARK_NAME = "w_mark_name"
    W_FAR_TARGET = "w_far_target"
    W_RECALL_TARGET = "w_recall_target"
    W_VALIDATION_DIR = "w_validation_dir"
    W_CURVE_SOURCE = "w_curve_source"
    W_SHOW_CURVE = "w_show_curve"
    W_SAVE_NOTE = "w_save_note"
    W_SAVE_NAME = "w_save_name"
    W_SAVE_DEFAULT = "w_save_default"
    W_UPLOAD_MARK = "w_upload_mark"
    W_OPEN_OPERATING = "w_open_operating"  # toggles that open the issue-21 sections (dashboard.teach_panel.section)
    W_OPEN_SAVE = "w_open_save"
    W_OPEN_MARK = "w_open_mark"
    FOLD_PANELS = "fold_panels"  # the W_OPEN_* toggles to fold on their next draw (a new version opened)
    UPLOADS = "_uploads"  # dashboard.images.UploadStore: the Try an image uploads held at their shown size
    UPLOADS_PIXEL_THR = "_uploads_pixel_thr"  # (pixel threshold, colour scale) their overlays were drawn at
    MY_JOBS = "_my_jobs"  # ids of the jobs this session submitted
    JOBS_SEEN = "_jobs_seen"  # ids of the finished jobs the job list showed last time
    JOB_MESSAGE = "_job_message"  # error of the last cancel, shown once
    LOAD_AFTER_JOB = "_load_after_job"  # model dir a finished fit of this session wrote, loaded on the next run
    PRESENTER = "_presenter"  # True once this session typed the presenter password (dashboard.roles)
    ROLE_MESSAGE = "_role_message"  # outcome of the last unlock try, shown once
    W_PASSWORD = "w_password"
    LINK_REFUSED = "_link_refused"  # the refusal of a link's data root, shown once above the page
