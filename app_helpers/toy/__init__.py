"""The bundled model: a small GPT-2 trained by the kit on its own tasks' sentences (see ``train``)."""
