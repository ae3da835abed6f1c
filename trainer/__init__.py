"""Train, tune, evaluate and export the bone-fracture classifier.

Importing this package is cheap: TensorFlow is imported only by the stages that need it.
"""
