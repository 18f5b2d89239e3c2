"""In-app explanations for a non-specialist (markdown), shown in expanders and help tooltips."""

SOM_MAPS = """
**What you are looking at.** The model has learned a *map* of what small patches of defect-free
images look like. Each cell of the map is one **neuron**; neighbouring neurons stand for similar
patches.

* The **U-matrix** colours a neuron by how different it is from its neighbours on the map: dark
  valleys are groups of neurons that stand for similar patches (one texture, one part of the
  object); bright ridges are borders between those groups, where patch appearance changes abruptly.
* The **hit map** counts the training patches whose best-matching unit (**BMU**, the closest
  neuron) is that neuron: dense cells are common appearances, empty cells are neurons between
  groups, usually on U-matrix ridges.

A test patch that maps onto an empty or ridge neuron, or lies far from its neuron, is unlike
anything seen in training. Click any neuron to see the training patches it stands for and the test
images where it is the best match.
"""

COMPONENT_PLANE = """
Each neuron stores one value per feature dimension (a number the neural network computes for a
patch, such as "how much vertical edge" or "how bright"). A **component plane** colours the map by
one of those values, so you can see which regions of the map care about that feature.
"""

THRESHOLDS = """
* **Image score**: the highest anomaly value anywhere in the image, in Mahalanobis units (how many
  "standard deviations" a patch is from what the model learned).
* **Image threshold**: an image is called **anomalous** when its score is **at or above** the
  threshold. The same rule is used by the metrics, the command line and every page.
* **Deployable** threshold: set from training images only (a high percentile of their
  cross-fitted scores), so it needs no defective samples.
* **F1-optimal** threshold: the best balance of misses and false alarms *on this test set*; it is
  optimistic because it was chosen with the test labels.
* **Pixel threshold**: cuts the heatmap into the red "predicted region". It is the pixel-level
  F1-optimal threshold of the evaluation (the same one the command line's figures use).
"""

CONTRIBUTIONS = """
The score of a cell is its **Mahalanobis distance** to the closest of its nearest neurons: a
distance that accounts for how much each feature normally varies and how features vary together.
Its square is a sum of one term per feature dimension; the bars show the largest terms.
Because features are correlated, some terms are **negative** (two features that usually move
together but did not here, or did and cancel out), so the largest terms alone can add up to **more
than 100%** of the total.
"""

TEST_TABLE = """
**TP** defective and flagged · **FP** good but flagged (false alarm) · **FN** defective but
missed · **TN** good and passed. Filter the table, search a file name, and click a row to inspect
that image.
"""

UPLOADS = """
The model only knows the category it was trained on. An upload is flagged **unlike the training
images** when its score is far beyond every training and test score seen, or when its size or
colour statistics differ strongly from the category's images: its verdict then says little.
"""

FAR_TARGET = """The share of defect-free images you accept to see flagged. The threshold is read from the
model's cross-fitted training scores: each training image scored by a model fitted without it, so no
defective image and no label is needed. With T such scores the rate moves in steps of 1/T."""

FOOTPRINT_COLOURS = ("Coloured neurons: the image's footprint, each neuron by the highest patch score of the cells "
                     "that chose it, on the heatmaps' colour scale and colour bar (the same score has the same colour "
                     "here and on the heatmap; the heatmap is blurred, so its peaks are a little lower).")
"""Caption of the footprint map's colours (SOM explorer)."""
