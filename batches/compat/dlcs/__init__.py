"""DLCS's image queue and batches (`/customers/{customer}/queue/...`), under /compat/dlcs/.

Translated onto batchsite's services: submitting a collection of images to the queue
creates and commits an `image.derive` batch whose items are the images, each fetched from
its origin by a worker; a batch is named by its integer `number`, a customer by its
account's `number`. See views.py for what differs from DLCS.
"""
