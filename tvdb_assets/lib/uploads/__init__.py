from tvdb_assets.lib.uploads.base import NOTHING, WHOLE, Listing, Span, UploadInfo, UploadStore
from tvdb_assets.lib.uploads.local import LocalInbox

__all__ = ["NOTHING", "WHOLE", "Listing", "LocalInbox", "Span", "UploadInfo", "UploadStore"]
