"""What goes into a model and how a model sits on disk: the contract trainer and service share.

- :mod:`modelio.images` decodes an uploaded or stored file (JPEG, PNG, ...; DICOM through
  :mod:`modelio.dicom`) into the model's input, the one preprocessing both sides use.
- :mod:`modelio.artifact` is the version folder's file layout (TF Serving's), readable
  without TensorFlow.
- :mod:`modelio.contract` names the graph's outputs, describes them in ``metadata.json``
  (``outputs``) and holds the warning rules.
- :mod:`modelio.locations` holds the models folder and model name defaults, read from
  ``BONEFRAC_MODELS_DIR`` and ``BONEFRAC_MODEL_NAME`` once per process.

Only numpy, Pillow and pydicom are imported here, so the service and its tests never load
the trainer's dependencies.
"""
