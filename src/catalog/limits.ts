/** Limits of the catalog, apart from its code so that the CLI's option parsers can state them without loading it. */
export const MAX_SHARDS_PER_TABLE = 4096;
