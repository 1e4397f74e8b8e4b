from tvdb_assets.lib.uploads.base import WHOLE, Listing, Span, UploadInfo, UploadStore
from tvdb_assets.lib.uploads.local import LocalInbox

__all__ = ["WHOLE", "Listing", "LocalInbox", "Span", "UploadInfo", "UploadStore"]
