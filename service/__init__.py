"""The bonefrac inference service: FastAPI over the versioned model the trainer exports.

Importing this package does no work: build an app with :func:`service.app.create_app`
or run ``python -m service``. TensorFlow is not needed; the model runs on ai-edge-litert.
"""
