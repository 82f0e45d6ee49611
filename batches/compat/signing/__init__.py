"""The document-signing service's batch API (`/api/CreateBatch/...`), under /compat/signing/.

Translated onto batchsite's services: a batch, named by its integer `number`, runs the job
type its process names (`document.sign` or `document.verify` by default); uploading a ZIP
adds its files as items; accepting commits the batch; the signed package is the batch
package. See views.py for what differs from the source API (authentication, error bodies,
processes, echoed fields).
"""
