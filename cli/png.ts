/**
 * PNG pictures of the SVG charts, drawn by resvg (@resvg/resvg-js). It is imported on first use so
 * that the rest of the CLI does not load a native module it does not need.
 */
import { ShardcastError, errorMessage } from '../src/errors.js';

export const PNG_RENDERER = '@resvg/resvg-js';

/** The charts say font-family="sans-serif": DejaVu Sans where it is installed, else the first system font. */
const SANS_SERIF = 'DejaVu Sans';

export interface PngPicture {
  png: Buffer;
  width: number;
  height: number;
  /** False when no font could be found: the picture was drawn without its labels. */
  textDrawn: boolean;
}

type Resvg = typeof import('@resvg/resvg-js');

let renderer: Promise<Resvg> | undefined;

function loadRenderer(): Promise<Resvg> {
  renderer ??= import('@resvg/resvg-js').catch((err: unknown) => {
    renderer = undefined;
    throw new ShardcastError('PNG_RENDERER_MISSING', `cannot load the PNG renderer ${PNG_RENDERER} (npm install ${PNG_RENDERER}): ${errorMessage(err)}`, { cause: err });
  });
  return renderer;
}

/** Draws `svg` at its own size; `systemFonts: false` draws without any font (as a machine that has none). */
export async function svgToPng(svg: string, { systemFonts = true }: { systemFonts?: boolean } = {}): Promise<PngPicture> {
  const { Resvg } = await loadRenderer();
  // 'error': resvg warns on stderr whenever it substitutes the default family, which is expected here.
  const options = { font: { loadSystemFonts: systemFonts, defaultFontFamily: SANS_SERIF, sansSerifFamily: SANS_SERIF }, logLevel: 'error' as const };
  const image = new Resvg(svg, options).render();
  // resvg leaves out text it has no font for without a word: ask it to lay out one digit the same way.
  const probe = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" font-family="sans-serif"><text y="9">0</text></svg>';
  const textDrawn = new Resvg(probe, options).innerBBox() !== undefined;
  return { png: image.asPng(), width: image.width, height: image.height, textDrawn };
}
