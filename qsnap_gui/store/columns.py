"""The columns of the Qlarius tables that qsnap relies on (DOMAIN.md), as plain data.

The one list of them: the connect-time schema check reads it here without loading the ORM
(a second of a command's start on a slow machine), and the models in ``tables`` mark every
other production column ``extra``; a test checks that the two agree.
"""

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "me_file_tags": (
        "id",
        "me_file_id",
        "trait_id",
        "tag_value",
        "modified_date",
        "modified_by",
        "added_date",
        "added_by",
    ),
    "me_files": ("id", "display_name", "created_at", "updated_at"),
    "target_band_trait_groups": (
        "id",
        "target_band_id",
        "trait_group_id",
        "created_at",
        "updated_at",
    ),
    "target_bands": (
        "id",
        "target_id",
        "title",
        "description",
        "is_bullseye",
        "created_at",
        "updated_at",
    ),
    "target_populations": (
        "id",
        "target_band_id",
        "me_file_id",
        "created_at",
        "updated_at",
        "matching_tags_snapshot",
    ),
    "targets": (
        "id",
        "marketer_id",
        "title",
        "description",
        "created_at",
        "updated_at",
        "population_status",
        "last_populated_at",
    ),
    "trait_group_traits": ("id", "trait_group_id", "trait_id", "created_at", "updated_at"),
    "trait_groups": (
        "id",
        "title",
        "description",
        "parent_trait_id",
        "marketer_id",
        "created_at",
        "updated_at",
        "deactivated_at",
    ),
    "traits": (
        "id",
        "trait_name",
        "input_type",
        "display_order",
        "parent_trait_id",
        "modified_date",
        "modified_by",
        "added_date",
        "added_by",
        "is_active",
    ),
}
"""The nine core tables and the columns qsnap relies on: checked at connect."""

OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ad_events": (
        "id",
        "me_file_id",
        "target_id",
        "target_band_id",
        "offer_id",
        "created_at",
        "updated_at",
        "matching_tags_snapshot",
    ),
    "offers": (
        "id",
        "campaign_id",
        "me_file_id",
        "media_run_id",
        "media_piece_id",
        "target_band_id",
        "created_at",
        "updated_at",
        "matching_tags_snapshot",
    ),
}
"""offers and ad_events: qsnap copies snapshots into them where they exist."""
