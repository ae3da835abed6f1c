"""The bonefrac web page (Streamlit) and its HTTP client for the inference service."""
