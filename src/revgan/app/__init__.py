"""``revgan serve``: a local web page (Gradio) to translate an uploaded image or volume."""
