"""Images: `tasks.images.check` reads and checks encoded images (ingest's workers import
it alone: Pillow only, no numpy, Prefect or pyarrow), and `tasks.images.decode` turns
stored images into the uint8 arrays training, gold, labeling functions, sampling and the
served model all see (`decode_images`, `to_pixels`). This file imports neither, so a
worker that needs only the check starts in milliseconds."""
